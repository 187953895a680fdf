"""Stored propensity models, sealed: a pickle with an HMAC over it.

scikit-learn models are pickles, and unpickling runs whatever the bytes say: whoever
can write a ``score_models`` row (a leaked database password, an injection elsewhere)
could run code in the gateway and its cron jobs. So the gateway signs each model it
stores with a key the database does not hold, and unpickles only bytes whose HMAC it
checks first; an unsigned (stored before sealing) or altered model is refused with
an error that says to train a new one.

The key is derived from the erasure key (GATEWAY_ERASURE_KEY, the deployment's one
server secret, never stored in the database) for this one use: a model is only ever
read by processes that hold it. Changing that key retires every stored model.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any

_MAGIC = b"gateway-model-v1:"
_DIGEST = hashlib.sha256().digest_size


class UntrustedModel(Exception):
    """A stored model that is not sealed by this deployment's key."""


def model_key(erasure_key: str) -> bytes:
    """The sealing key, derived from the erasure key for this use only."""
    return hmac.new(erasure_key.encode(), b"score models", hashlib.sha256).digest()


def seal(estimator: Any, key: bytes) -> bytes:
    body = pickle.dumps(estimator, pickle.HIGHEST_PROTOCOL)
    return _MAGIC + hmac.new(key, body, hashlib.sha256).digest() + body


def unseal(sealed: bytes, key: bytes, version: str) -> Any:
    """The estimator, once its seal is checked; ``UntrustedModel`` otherwise."""
    head = len(_MAGIC)
    mac, body = sealed[head : head + _DIGEST], sealed[head + _DIGEST :]
    expected = hmac.new(key, body, hashlib.sha256).digest()
    if not sealed.startswith(_MAGIC) or not hmac.compare_digest(mac, expected):
        raise UntrustedModel(
            f"the stored score model {version} is unsigned or altered (or the erasure key "
            "changed): refused, not loaded; train a new one with "
            "`gateway scores build --retrain`"
        )
    return pickle.loads(body)
