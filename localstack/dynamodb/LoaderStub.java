// Stand-in for LocalStack's ddb-local-loader agent jar (a download that only lifts DynamoDB Local's
// 20-GSI limit). LocalStack always starts Java with -javaagent:<this jar>, so an agent must exist;
// this one does nothing. install.sh compiles it and writes the manifest (Premain-Class: LoaderStub).
import java.lang.instrument.Instrumentation;

public final class LoaderStub {
    private LoaderStub() {}

    public static void premain(String args, Instrumentation instrumentation) {}
}
