"""Lease signatures: a server started with ``--lease-key-file`` signs each
task it leases with an HMAC-SHA256 of the task's id and digest; a worker
given the same file (``--lease-key-file`` or ``QUERN_LEASE_KEY_FILE``)
recomputes the digest from the fields it received and checks the signature
before it runs anything, so a task changed on the way is refused.

The digest is the SHA-256 of the task's canonical spec: its fields as JSON
with sorted keys and no whitespace, numbers written as the server writes
them. This module writes that form byte for byte."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

MIN_SECRET_LEN = 32
_CONTEXT = b"quern-lease-v1\x00"
_I64_MIN, _U64_END = -(2**63), 2**64


class KeyFileError(ValueError):
    """A lease key file that cannot be used."""


class LeaseKeys:
    """The keys a worker verifies lease signatures with."""

    def __init__(self, secrets: List[str]) -> None:
        if not secrets:
            raise KeyFileError(
                f"holds no key (one secret per line, at least {MIN_SECRET_LEN} characters: `openssl rand -hex 32`)"
            )
        self._keys: Dict[str, bytes] = {}
        for secret in secrets:
            raw = secret.encode()
            self._keys[hashlib.sha256(raw).hexdigest()[:16]] = raw

    @classmethod
    def parse(cls, text: str) -> LeaseKeys:
        secrets = []
        for number, line in enumerate(text.splitlines(), 1):
            secret = line.strip()
            if not secret or secret.startswith("#"):
                continue
            if len(secret) < MIN_SECRET_LEN:
                raise KeyFileError(
                    f"line {number}: a secret needs at least {MIN_SECRET_LEN} characters (`openssl rand -hex 32`)"
                )
            secrets.append(secret)
        return cls(secrets)

    @classmethod
    def load(cls, path: str) -> LeaseKeys:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise KeyFileError(f"cannot read {path}: {e}") from e
        return cls.parse(text)

    @property
    def ids(self) -> List[str]:
        return list(self._keys)

    def verify(self, task: Dict[str, Any]) -> Optional[str]:
        """Why ``task`` must not run, or ``None`` when its lease signature verifies."""
        signature = (task.get("lease") or {}).get("signature")
        if not isinstance(signature, dict):
            return "the lease is not signed, and this worker only runs signed leases"
        secret = self._keys.get(str(signature.get("key")))
        if secret is None:
            return f"the lease is signed with key {signature.get('key')}, which this worker does not hold"
        try:
            digest = spec_digest(task)
            task_id = uuid.UUID(str(task["id"])).bytes
        except (KeyError, TypeError, ValueError):
            return "the task's fields do not match its digest: they were changed on the way"
        if digest != task.get("digest"):
            return "the task's fields do not match its digest: they were changed on the way"
        expected = hmac.new(secret, _CONTEXT + task_id + digest.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, str(signature.get("hmac", "")).lower()):
            return "the lease signature does not verify: the task was changed on the way"
        return None


def spec_digest(task: Dict[str, Any]) -> str:
    """``sha256:<hex>`` of the task's canonical spec, as the server computes it."""
    retry = task["retry"]
    spec = {
        "input": task.get("input"),
        "max_attempts": task["max_attempts"],
        "metadata": task.get("metadata") or {},
        "name": task["name"],
        "priority": task["priority"],
        "queue": task["queue"],
        "retry": {
            "backoff": retry["backoff"],
            "initial_ms": retry["initial_ms"],
            "jitter": float(retry["jitter"]),
            "max_ms": retry["max_ms"],
        },
        "timeout_ms": task.get("timeout_ms"),
    }
    return "sha256:" + hashlib.sha256(canonical(spec).encode()).hexdigest()


def canonical(value: Any) -> str:
    """``value`` as JSON with sorted keys, no whitespace, and numbers as the
    server writes them."""
    out: List[str] = []
    _write(value, out)
    return "".join(out)


def _write(value: Any, out: List[str]) -> None:
    if isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value)):
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, str):
        out.append(_string(value))
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif isinstance(value, int):
        # Integers beyond 64 bits are floats to the server.
        out.append(str(value) if _I64_MIN <= value < _U64_END else _float(float(value)))
    elif isinstance(value, float):
        out.append(_float(value))
    else:
        raise TypeError(f"not JSON: {type(value).__name__}")


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _float(x: float) -> str:
    """The server's form: the shortest digits that read back as ``x``, fixed
    for decimal exponents -5 to 15 (always with a fraction), otherwise
    ``d.ddde+X`` or ``d.ddde-X`` with the exponent unpadded."""
    if math.isnan(x) or math.isinf(x):
        raise ValueError("not JSON: a non-finite float")
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0:
        return sign + "0.0"
    digits, exponent = _shortest(abs(x))
    if -5 <= exponent <= 15:
        if exponent >= 0:
            whole = digits[: exponent + 1].ljust(exponent + 1, "0")
            fraction = digits[exponent + 1 :] or "0"
        else:
            whole, fraction = "0", "0" * (-exponent - 1) + digits
        return f"{sign}{whole}.{fraction}"
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'+' if exponent > 0 else '-'}{abs(exponent)}"


def _shortest(x: float) -> Tuple[str, int]:
    """The shortest round-trip digits of ``x > 0`` (no leading or trailing
    zeros) and the decimal exponent of the first: ``x = d.ddd * 10**e``."""
    mantissa, _, exp = repr(x).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    exponent = int(exp or 0) + len(whole) - 1
    stripped = digits.lstrip("0")
    exponent -= len(digits) - len(stripped)
    return stripped.rstrip("0") or "0", exponent
