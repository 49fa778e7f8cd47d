"""A paper estimate of the AWS cost of 1,000 pages, from measured step times and the stack's own sizes.

    .venv/bin/python bench/aws_cost.py        # after bench/pipeline_share.py (reads its JSON)

Inputs, none invented here: seconds per document of Validate, ExtractText and Classify measured by
bench/pipeline_share.py on real ~100-dpi scans (this machine's cores; a 2048 MB Lambda has about 1.15
vCPU, and every step is single-threaded, so the times carry over roughly); memory sizes from
infra_cdk/constants.py FUNCTIONS; state transitions walked through the synthesized definition in cdk.out
(`make synth`); S3 and DynamoDB requests counted from the step code (pipeline/steps.py).
Not included: cold starts (init is not billed for these managed runtimes' on-demand functions up to
10 s, but it adds latency), CloudWatch Logs ingestion, X-Ray, data transfer, free tiers, the API path.
Writes bench/results/aws_cost.json.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path[:0] = [str(REPO / "functions"), str(REPO)]

# us-east-1 list prices (USD). As published by AWS in 2024-11 (DynamoDB on-demand after the 2024-11-01
# reduction); written down from the pricing pages, not fetched by this script.
PRICES_AS_OF = "2024-11"
LAMBDA_GB_S = 0.0000166667  # x86_64, first 6 billion GB-s a month
LAMBDA_REQUEST = 0.20 / 1_000_000
SFN_TRANSITION = 0.025 / 1_000  # Standard workflows
S3_PUT = 0.005 / 1_000  # PUT, COPY, POST, LIST
S3_GET = 0.0004 / 1_000  # GET, HEAD and the like
DDB_WRITE = 0.625 / 1_000_000  # on-demand write request unit (1 KB)
DDB_READ = 0.125 / 1_000_000  # on-demand read request unit (4 KB; strongly consistent = 1 RRU)

# Requests per document, from pipeline/steps.py (single-page path):
S3_PUTS = 3  # the upload itself, the parked text (ExtractText), the result file (Classify)
S3_GETS = 4  # Validate: HEAD + GET; ExtractText: GET; Classify: GET of the text
DDB_WRITES = 5  # create (1 WRU), prediction (1), final record with scores (<= 2 KB: 2), upload (1)
DDB_READS = 1  # Classify's consistent read of the record


def _definition() -> dict[str, Any] | None:
    for template in sorted((REPO / "cdk.out").glob("*.template.json")):
        resources = json.loads(template.read_text())["Resources"]
        for res in resources.values():
            if res["Type"] == "AWS::StepFunctions::StateMachine" and "document" in json.dumps(
                res["Properties"].get("DefinitionString", "")
            ):
                body = res["Properties"]["DefinitionString"]
                if isinstance(body, dict):
                    body = "".join(p if isinstance(p, str) else "ARN" for p in body["Fn::Join"][1])
                parsed: dict[str, Any] = json.loads(body)
                return parsed
    return None


def transitions(definition: dict[str, Any], document: dict[str, Any]) -> int:
    """States entered by one execution whose Validate output is `document` (Choice rules: BooleanEquals,
    IsPresent; a Map counts itself plus its item processor's states per item)."""

    def present(path: str) -> Any:
        value: Any = document
        for part in path.removeprefix("$.").replace("[", ".").replace("]", "").split("."):
            if isinstance(value, list):
                value = value[int(part)] if int(part) < len(value) else None
            else:
                value = value.get(part) if isinstance(value, dict) else None
        return value

    states, name, count = definition["States"], definition["StartAt"], 0
    while name:
        state = states[name]
        count += 1
        if state["Type"] == "Choice":
            name = state.get("Default")
            for rule in state["Choices"]:
                value = present(rule["Variable"])
                if ("BooleanEquals" in rule and value == rule["BooleanEquals"]) or (
                    "IsPresent" in rule and (value is not None) == rule["IsPresent"]
                ):
                    name = rule["Next"]
                    break
            continue
        if state["Type"] == "Map":
            processor = state.get("ItemProcessor") or state["Iterator"]
            items = len(present(state["ItemsPath"]) or [])
            count += items * transitions(processor, {})
        name = None if state.get("End") or state["Type"] in ("Succeed", "Fail") else state.get("Next")
    return count


def estimate(step_s: dict[str, float], pages_per_document: int, definition: dict[str, Any] | None) -> dict[str, Any]:
    """Cost of 1,000 pages arriving as documents of `pages_per_document` pages (step_s: per page)."""
    from infra_cdk import constants as c

    documents = 1000 / pages_per_document
    mem = {name: spec.memory_mb / 1024 for name, spec in c.FUNCTIONS.items()}
    long_pdf = pages_per_document > c.LARGE_PDF_PAGES
    ranges = math.ceil(pages_per_document / c.PAGES_PER_CHUNK) if long_pdf else 0
    extract_fn = "ExtractPages" if long_pdf else "ExtractText"
    gb_s = 1000 * (
        mem["Validate"] * step_s["validate"]
        + mem[extract_fn] * step_s["extract"]
        + mem["Classify"] * step_s["classify"]
    )
    # Validate, ExtractText, Classify; a long PDF: Validate, one ExtractPages per range, MergeText, Classify.
    invocations = documents * (ranges + 3 if long_pdf else 3)
    doc = {"proceed": True, "page_ranges": [{}] * ranges} if long_pdf else {"proceed": True}
    per_doc_transitions = transitions(definition, doc) if definition else None
    s3_puts = documents * S3_PUTS + documents * ranges  # one parked text per range
    s3_gets = documents * S3_GETS + documents * 2 * ranges  # each range reads the PDF; MergeText each part
    lines = {
        "lambda_compute": gb_s * LAMBDA_GB_S,
        "lambda_requests": invocations * LAMBDA_REQUEST,
        "step_functions": documents * per_doc_transitions * SFN_TRANSITION if per_doc_transitions else None,
        "s3_requests": s3_puts * S3_PUT + s3_gets * S3_GET,
        "dynamodb": documents * (DDB_WRITES * DDB_WRITE + DDB_READS * DDB_READ),
    }
    return {
        "pages_per_document": pages_per_document,
        "documents": round(documents, 2),
        "lambda_gb_s": round(gb_s, 1),
        "lambda_invocations": round(invocations),
        "transitions_per_document": per_doc_transitions,
        "usd": {k: (round(v, 4) if v is not None else None) for k, v in lines.items()},
        "usd_total": round(sum(v for v in lines.values() if v is not None), 4),
    }


def main() -> int:
    share = json.loads((RESULTS / "pipeline_share.json").read_text())["outside_ocr"]
    docs = share["documents"]
    per_page = {k: v / docs for k, v in share["step_s"].items()}  # the scans are one page each
    definition = _definition()
    result = {
        "prices_as_of": PRICES_AS_OF,
        "region": "us-east-1",
        "measured_step_s_per_page": {k: round(v, 3) for k, v in per_page.items()},
        "single_page_scans": estimate(per_page, 1, definition),
        "300_page_pdfs": estimate(per_page, 300, definition),
    }
    for name in ("single_page_scans", "300_page_pdfs"):
        r = result[name]
        print(
            f"1,000 pages as {name.replace('_', ' ')}: ${r['usd_total']:.3f} "
            f"(Lambda {r['lambda_gb_s']} GB-s, {r['transitions_per_document']} transitions/document; {r['usd']})"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "aws_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
