"""Stored propensity models, sealed: a pickle with an HMAC over it and over its row.

scikit-learn models are pickles, and unpickling runs whatever the bytes say: whoever
can write a ``score_models`` row (a leaked database password, an injection elsewhere)
could run code in the gateway and its cron jobs. So the gateway signs each model it
stores with a key the database does not hold, and unpickles only bytes whose HMAC it
checks first; an unsigned (stored before sealing) or altered model is refused.

The HMAC also covers what the row says the model is -- its version, horizon and
evaluation -- so a sealed model copied onto another row (a 30-day model served as the
90-day one, a rejected candidate under the active version) does not check either.
Whether a row is ``active`` is left out: each build with a better candidate turns the
others off, and the most that flag can do is choose among models this deployment
trained.

The key is derived from the erasure key (GATEWAY_ERASURE_KEY, the deployment's one
server secret, never stored in the database) for this one use: a model is only ever
read by processes that hold it. Changing that key retires every stored model. The
built-in erasure key is printed in this repository, so a model sealed under it proves
nothing: ``deployment_model_key`` refuses it, by the rule ``gateway serve`` follows,
unless a local demo is asked for.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from typing import Any

from gateway.settings import BUILTIN_ERASURE_KEY_PROBLEM, Settings

# v1 sealed the pickle alone: such a model is refused like an unsigned one.
_MAGIC = b"gateway-model-v2:"
_DIGEST = hashlib.sha256().digest_size


class UntrustedModel(Exception):
    """A stored model that is not sealed by this deployment's key for its row."""


class PublicModelKey(Exception):
    """The sealing key would come from the built-in (public) erasure key."""


def model_key(erasure_key: str) -> bytes:
    """The sealing key, derived from the erasure key for this use only."""
    return hmac.new(erasure_key.encode(), b"score models", hashlib.sha256).digest()


def deployment_model_key(settings: Settings, *, insecure_demo: bool) -> bytes:
    """This deployment's sealing key; ``PublicModelKey`` while the erasure key is the
    built-in one, unless ``insecure_demo`` (a local demo's ``--insecure-demo``)."""
    if settings.erasure_key_is_builtin and not insecure_demo:
        raise PublicModelKey(
            f"refusing to seal or load score models: {BUILTIN_ERASURE_KEY_PROBLEM}; "
            "for a local demo only, run with --insecure-demo"
        )
    return model_key(settings.erasure_key.get_secret_value())


def _signed(key: bytes, body: bytes, version: str, horizon_days: int, evaluation: Any) -> bytes:
    # The evaluation as the database gives it back (JSON), in one spelling.
    row = json.dumps(
        [version, horizon_days, json.loads(json.dumps(evaluation))],
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    mac = hmac.new(key, _MAGIC, hashlib.sha256)
    mac.update(len(row).to_bytes(8, "big") + row)
    mac.update(body)
    return mac.digest()


def seal(estimator: Any, key: bytes, *, version: str, horizon_days: int, evaluation: Any) -> bytes:
    """The estimator as its row stores it: pickled, and signed with the row's fields."""
    body = pickle.dumps(estimator, pickle.HIGHEST_PROTOCOL)
    return _MAGIC + _signed(key, body, version, horizon_days, evaluation) + body


def unseal(sealed: bytes, key: bytes, *, version: str, horizon_days: int, evaluation: Any) -> Any:
    """The estimator, once its seal is checked against its row; ``UntrustedModel``
    otherwise."""
    head = len(_MAGIC)
    mac, body = sealed[head : head + _DIGEST], sealed[head + _DIGEST :]
    expected = _signed(key, body, version, horizon_days, evaluation)
    if not sealed.startswith(_MAGIC) or not hmac.compare_digest(mac, expected):
        raise UntrustedModel(
            f"the stored score model {version} is unsigned, altered or not this row's "
            "(or the erasure key changed): refused, not loaded; run `gateway scores "
            "build` to train a new one"
        )
    return pickle.loads(body)
