"""The TF-IDF + linear model as a hand-built ONNX graph (it is a dozen nodes).

Graph contract, shared with any later model: inputs ``input_ids`` and ``attention_mask`` (int64
[batch, seq]), output ``probabilities`` (float32 [batch, n_classes]). Here:

    zeros  = ConstantOfShape([batch, V])
    counts = ScatterElements(zeros, input_ids, float(attention_mask), axis=1, reduction="add")
    x      = log(counts + 1) * idf
    x      = x / max(sqrt(sum(x * x, axis=1)), 1e-12)
    probabilities = softmax(x @ W^T + b)

An empty document (all-zero mask) gives x = 0, hence softmax(b): the model's prior, never NaN.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from docflow.domain.encoding import ATTENTION_MASK, INPUT_IDS, PROBABILITIES
from docflow_training.features import NORM_EPSILON

# ScatterElements' reduction attribute needs opset 16; IR 8 is what opset 17 requires and keeps
# the file loadable by older onnxruntime releases too.
OPSET = 17
IR_VERSION = 8


def softmax_weights(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A fitted logistic regression's weights as one row per class for the graph's softmax.

    With two classes scikit-learn keeps one row, ``z = w.x + b`` with P(second class) = sigmoid(z).
    Rows ``-w/2`` and ``+w/2`` (biases ``-b/2``, ``+b/2``) give softmax = [sigmoid(-z), sigmoid(z)]: the
    same probabilities, in the graph every model shares."""
    if coef.shape[0] == 1:
        return np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    return coef, intercept


def build_tfidf_linear_graph(
    idf: np.ndarray,
    coef: np.ndarray,
    intercept: np.ndarray,
    metadata: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """``idf`` [V], ``coef`` [n_classes, V], ``intercept`` [n_classes] (float64 in, float32 stored)."""
    n_classes, vocab_size = coef.shape
    if idf.shape != (vocab_size,) or intercept.shape != (n_classes,):
        raise ValueError(f"shape mismatch: idf {idf.shape}, coef {coef.shape}, intercept {intercept.shape}")

    def const(name: str, array: np.ndarray) -> TensorProto:
        return numpy_helper.from_array(array, name=name)

    initializers = [
        const("idf", idf.astype(np.float32)),
        const("weights_t", np.ascontiguousarray(coef.T, dtype=np.float32)),
        const("bias", intercept.astype(np.float32)),
        const("vocab_size", np.array([vocab_size], dtype=np.int64)),
        const("one", np.array(1.0, dtype=np.float32)),
        const("epsilon", np.array(NORM_EPSILON, dtype=np.float32)),
        const("axis_1", np.array([1], dtype=np.int64)),
        const("start_0", np.array([0], dtype=np.int64)),
        const("end_1", np.array([1], dtype=np.int64)),
    ]
    nodes = [
        helper.make_node("Shape", [INPUT_IDS], ["ids_shape"]),
        helper.make_node("Slice", ["ids_shape", "start_0", "end_1"], ["batch"]),
        helper.make_node("Concat", ["batch", "vocab_size"], ["counts_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape",
            ["counts_shape"],
            ["zeros"],
            value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
        ),
        helper.make_node("Cast", [ATTENTION_MASK], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("ScatterElements", ["zeros", INPUT_IDS, "mask"], ["counts"], axis=1, reduction="add"),
        helper.make_node("Add", ["counts", "one"], ["counts_plus_one"]),
        helper.make_node("Log", ["counts_plus_one"], ["tf"]),
        helper.make_node("Mul", ["tf", "idf"], ["tfidf"]),
        helper.make_node("Mul", ["tfidf", "tfidf"], ["squares"]),
        helper.make_node("ReduceSum", ["squares", "axis_1"], ["sum_squares"], keepdims=1),
        helper.make_node("Sqrt", ["sum_squares"], ["norm"]),
        helper.make_node("Max", ["norm", "epsilon"], ["safe_norm"]),
        helper.make_node("Div", ["tfidf", "safe_norm"], ["features"]),
        helper.make_node("MatMul", ["features", "weights_t"], ["scores"]),
        helper.make_node("Add", ["scores", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [PROBABILITIES], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "docflow_tfidf_linear",
        inputs=[
            helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info(ATTENTION_MASK, TensorProto.INT64, ["batch", "sequence"]),
        ],
        outputs=[helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["batch", n_classes])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="docflow_training",
        ir_version=IR_VERSION,
    )
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    return model
