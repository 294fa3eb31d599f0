"""Schemathesis hooks for the GPUAI control plane: node (agent) routes signed as an agent signs them.

Loaded through SCHEMATHESIS_HOOKS by test/security/schemathesis.test.ts, which registers a node
first and hands its identity over in the environment:

  GPUAI_ST_NODE_ID         the node id (node_ + base32(sha256(public key))[0..26])
  GPUAI_ST_NODE_KEY        its Ed25519 private key, PKCS#8 PEM
  GPUAI_ST_NODE_PUBLIC_KEY its raw public key, base64url

A request to a node route gets the headers protocol/signing.ts defines, over the exact bytes that
go on the wire (the signer runs as a `requests` auth on the prepared request):

  Ed25519( GPUAI-SIG-1 \\n METHOD \\n PATH?QUERY \\n DATE_MS \\n NONCE \\n SHA256_HEX(BODY) )

Without the signature those routes only ever answer 401, and Schemathesis would never get past
authentication. The node id in the path is set to the registered node's when the generated one is
a valid id (an invalid one stays, so negative cases still reach the server), and a registration
body names the registered public key, so the signature verifies under the key being registered.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import time

import requests
import schemathesis
from cryptography.hazmat.primitives.serialization import load_pem_private_key

NODE_ID = os.environ["GPUAI_ST_NODE_ID"]
PUBLIC_KEY = os.environ["GPUAI_ST_NODE_PUBLIC_KEY"]
PRIVATE_KEY = load_pem_private_key(os.environ["GPUAI_ST_NODE_KEY"].encode(), password=None)

VALID_NODE_ID = re.compile(r"^node_[a-z2-7]{26}$")


def canonical_request(method: str, path_with_query: str, date_ms: int, nonce: str, body: bytes) -> bytes:
    """The signed message, byte for byte as protocol/signing.ts `canonicalRequest` builds it."""
    return "\n".join(
        ["GPUAI-SIG-1", method.upper(), path_with_query, str(date_ms), nonce, hashlib.sha256(body).hexdigest()]
    ).encode()


class NodeSignature(requests.auth.AuthBase):
    """Signs a prepared request as the registered node: fresh date and nonce on every call."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        date_ms = int(time.time() * 1000)
        nonce = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
        message = canonical_request(request.method or "GET", request.path_url, date_ms, nonce, body)
        signature = base64.urlsafe_b64encode(PRIVATE_KEY.sign(message)).rstrip(b"=").decode()
        request.headers["x-gpuai-node"] = NODE_ID
        request.headers["x-gpuai-date"] = str(date_ms)
        request.headers["x-gpuai-nonce"] = nonce
        request.headers["x-gpuai-signature"] = signature
        return request


def is_node_route(case) -> bool:
    """Operations that declare the nodeSignature security scheme."""
    security = case.operation.definition.raw.get("security") or []
    return any("nodeSignature" in requirement for requirement in security)


@schemathesis.auth(refresh_interval=None)
class SignedNodeRequests:
    def get(self, case, context):
        return NodeSignature() if is_node_route(case) else None

    def set(self, case, data, context):
        params = case.path_parameters
        if params and isinstance(params.get("nodeId"), str) and VALID_NODE_ID.match(params["nodeId"]):
            params["nodeId"] = NODE_ID
        body = case.body
        if (
            case.method.upper() == "POST"
            and case.operation.path == "/v1/nodes"
            and isinstance(body, dict)
            and isinstance(body.get("publicKey"), str)
        ):
            body["publicKey"] = PUBLIC_KEY
        case._auth = data


def _positive(case) -> bool:
    meta = getattr(case, "meta", None)
    generation = getattr(meta, "generation", None)
    return getattr(getattr(generation, "mode", None), "value", None) == "positive"


def _as_int(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


@schemathesis.hook
def before_call(context, case, kwargs):
    """Adjustments to values no schema can describe fully:

    - A long poll waits up to `wait` seconds when no task fits (it is documented to): a valid wait
      is cut to one second so that the run spends its time on cases, not on waiting; the 0..20
      range itself is still checked by the negative cases, which this leaves alone.
    - A list cursor is opaque: only the `cursor` of a previous page is valid, and no string that
      the schema allows is one by its shape, so a positive case carries none (the server answers a
      made-up one with 400 `invalid_cursor`, which negative and fuzzed cases still reach).
    - A job's `deadline` and a key's `expiresAt` must lie in the future when they arrive (400
      `deadline_passed`, `expiry_in_past` otherwise), which a date-time schema cannot say: a
      positive case's is moved to a day from now. Its schema example (2099) is already future.
    """
    if _positive(case) and isinstance(case.body, dict):
        tomorrow = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
        for name in ("deadline", "expiresAt"):
            if isinstance(case.body.get(name), str):
                case.body[name] = tomorrow
    if not isinstance(case.query, dict):
        return
    if case.operation.path.endswith("/work"):
        wait = _as_int(case.query.get("wait"))
        if wait is not None and 1 < wait <= 20:
            case.query["wait"] = 1
    if _positive(case) and "cursor" in case.query:
        del case.query["cursor"]
