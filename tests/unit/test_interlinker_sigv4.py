"""The interlinker R package signs its API calls (API Gateway with IAM authorization, Terraform's
default) exactly as botocore's SigV4 signer signs the same request."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ROOT = Path(__file__).resolve().parents[2]
RSCRIPT = shutil.which("Rscript")
URL = "https://abc123.execute-api.eu-west-1.amazonaws.com/submitjob"
BODY = '{"name":"Test job","script":"s.R","func":"main","arguments":{"a":[1,2]}}'
STAMP = "20261202T120304Z"


def _r_headers(token: str) -> dict[str, str]:
    if RSCRIPT is None:
        pytest.skip("Rscript is not installed (Debian: r-base-core; `make test` installs it as root)")
    program = f"""
        source("{ROOT / "r/interlinker/R/interlinker.R"}")
        headers <- .sigv4_headers({json.dumps(URL)}, {json.dumps(BODY)},
            time = as.POSIXct("2026-12-02 12:03:04", tz = "UTC"), access_key = "AKIDEXAMPLE",
            secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token = {json.dumps(token)},
            region = "eu-west-1")
        cat(jsonlite::toJSON(as.list(headers), auto_unbox = TRUE))
    """
    result = subprocess.run([RSCRIPT, "-e", program], capture_output=True, text=True, timeout=120)
    if result.returncode and "there is no package called" in result.stderr:
        pytest.skip(f"an R package is missing (Debian: r-cran-jsonlite, r-cran-openssl): {result.stderr}")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _botocore_authorization(token: str) -> str:
    request = AWSRequest(method="POST", url=URL, data=BODY.encode(), headers={"X-Amz-Date": STAMP})
    if token:
        request.headers["X-Amz-Security-Token"] = token
    request.context["timestamp"] = STAMP
    signer = SigV4Auth(
        Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token or None),
        "execute-api",
        "eu-west-1",
    )
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    signature = signer.signature(string_to_sign, request)
    signed = signer.signed_headers(signer.headers_to_sign(request))
    scope = f"AKIDEXAMPLE/{STAMP[:8]}/eu-west-1/execute-api/aws4_request"
    return f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders={signed}, Signature={signature}"


@pytest.mark.parametrize("token", ["", "session-token-from-an-assumed-role"])
def test_the_r_package_signs_as_botocore_does(token):
    headers = _r_headers(token)
    assert headers["x-amz-date"] == STAMP
    assert headers.get("x-amz-security-token", "") == token
    assert headers["Authorization"] == _botocore_authorization(token)
