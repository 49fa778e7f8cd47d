"""The files of a model directory, by name: what the runtime reads, what is registered, published and
downloaded. Plain constants, no imports: the training state machine's functions (promotion gate,
publish) read them without the ML runtime (onnxruntime, tokenizers, numpy) in their layers."""

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
LABELS_FILE = "labels.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"  # the held-out evaluation; not needed to predict
BASELINE_FILE = "baseline.json"  # the drift baseline (docflow.domain.drift)
SCAN_HEAD_FILE = "scan_head.json"  # the head fitted on real labelled scans (docflow.domain.scan_head)

# A combined model (config.json's ``partner_weight``) also holds a second model's graph, tokenizer and config,
# whose probabilities are pooled with the first's (docflow.domain.classifier); labels.json is shared.
PARTNER_MODEL_FILE = "partner_model.onnx"
PARTNER_TOKENIZER_FILE = "partner_tokenizer.json"
PARTNER_CONFIG_FILE = "partner_config.json"
PARTNER_FILES = (PARTNER_MODEL_FILE, PARTNER_TOKENIZER_FILE, PARTNER_CONFIG_FILE)

REQUIRED_FILES = (MODEL_FILE, TOKENIZER_FILE, LABELS_FILE, CONFIG_FILE)
# Every file a model directory may hold.
MODEL_FILES = (*REQUIRED_FILES, METRICS_FILE, BASELINE_FILE, SCAN_HEAD_FILE, *PARTNER_FILES)
# The files whose change means another model (the fingerprint): the ones the runtime reads to predict.
SERVED_FILES = (*REQUIRED_FILES, SCAN_HEAD_FILE, *PARTNER_FILES)
