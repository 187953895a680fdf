"""BG/NBD (Fader, Hardie & Lee 2005) through the ``lifetimes`` library: the model
marketing analysts use to say who is still a customer and how much they will buy.

Fitted on each customer's (repeat purchase days, recency, age) in weeks as of a
cut-off. ``lifetimes`` answers P(alive) and the expected number of purchases in a
horizon; the probability of at least one purchase in it is not in the library and
follows from the model: dropout happens only just after a purchase, so a customer
alive at the cut-off buys nothing in ``t`` weeks with probability E[exp(-lambda t)], lambda's
posterior being Gamma(r + x, alpha + T).

Churn risk is Pareto/NBD's (Schmittlein, Morrison & Colombo 1987, ``lifetimes``' own
conditional pmf): the probability of no purchase in the next ``CHURN_DAYS`` days. Not
BG/NBD's 1 - P(alive): BG/NBD drops a customer out only just after a repeat purchase,
so every one-time buyer is alive for sure (CDNOW: 13-14k of 23.5k customers at 0.0;
ranking "no order in the holdout" at ROC AUC 0.32-0.36, backwards). Pareto/NBD's
customers can leave at any time, and its 1 - P(alive) still ranked below recency alone
on CDNOW (0.73-0.77 against 0.76-0.81); a shop whose customers never leave (the demo)
puts everyone's P(alive) at 1 under any of these models, while the chance of no order
in 90 days still tells a lapsing customer from a regular one.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np

from gateway.scores.ledger import Floats, Ledger

_PENALIZERS = (0.0, 0.001, 0.01, 0.1)
MAX_FIT_CUSTOMERS = 30_000  # CDNOW (23,570) is fitted whole
# Churn risk's window: the 90 days a marketer calls a customer lapsed after. Shorter ones
# ranked CDNOW's lapses 0.001 better but pile everyone near 1 (95% order nothing in 30).
CHURN_DAYS = 90


@dataclass(frozen=True)
class Summary:
    """Per customer as of the cut-off: repeat purchase days ``x``, weeks between first
    and last purchase ``t_x``, weeks since the first ``age``; ``known`` marks customers
    with a purchase by then (the others have no BG/NBD history)."""

    x: Floats
    t_x: Floats
    age: Floats
    known: np.ndarray


def summary(ledger: Ledger, cutoff: int) -> Summary:
    count, first, last, known = ledger.span(cutoff)
    return Summary(
        x=np.maximum(count - 1, 0),
        t_x=(last - first) / 7.0,
        age=(cutoff - first) / 7.0,
        known=known,
    )


@dataclass(frozen=True)
class BgNbd:
    """The fitted model and, per customer, its answers for one horizon."""

    r: float
    alpha: float
    a: float
    b: float
    p_alive: Floats
    expected: Floats
    p_purchase: Floats


def fit(ledger: Ledger, cutoff: int, horizon_days: int) -> BgNbd:
    """BG/NBD fitted on everything up to ``cutoff``; answers for the next ``horizon_days``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lifetimes sets a pandas option pandas 3 deprecates
        from lifetimes import BetaGeoFitter
        from lifetimes.utils import ConvergenceError

    s = summary(ledger, cutoff)
    sample, weights = _condensed(s)
    model = None
    for penalizer in _PENALIZERS:
        try:
            # lifetimes prints the whole optimizer result before raising ConvergenceError:
            # a failed penalizer is expected here (the next one is tried), not news.
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                model = BetaGeoFitter(penalizer_coef=penalizer).fit(
                    sample[:, 0], sample[:, 1], sample[:, 2], weights
                )
            break
        except ConvergenceError:
            continue
    if model is None:
        raise ValueError("BG/NBD did not converge on this data")
    params = model.params_
    return answer(
        tuple(float(params[name]) for name in ("r", "alpha", "a", "b")),
        ledger,
        cutoff,
        horizon_days,
        s,
    )


def _condensed(s: Summary) -> tuple[Floats, np.ndarray]:
    """The rows a fit reads and their weights. Customers with the same (x, t_x, age) --
    days are whole, so most of a large shop shares its pattern with others -- are one
    row weighted by their number, as Fader and Hardie condense the data: the same
    likelihood, a fraction of the work. Past ``MAX_FIT_CUSTOMERS`` the fit reads a
    seeded sample (four parameters, well pinned by 30,000 customers; autograd's Hessian
    over 100,000 rows took minutes); every customer is still scored."""
    rows = np.column_stack([s.x, s.t_x, s.age])
    fitted = np.flatnonzero(s.known)
    if len(fitted) > MAX_FIT_CUSTOMERS:
        fitted = np.random.default_rng(0).choice(fitted, MAX_FIT_CUSTOMERS, replace=False)
    sample, weights = np.unique(rows[fitted], axis=0, return_counts=True)
    return sample, weights


def fit_churn(ledger: Ledger, cutoff: int) -> tuple[tuple[float, ...], Floats] | None:
    """Pareto/NBD fitted on everything up to ``cutoff`` (the BG/NBD fit's rows): its
    (r, alpha, s, beta) and ``churn_with`` them; None with under 50 customers known or
    when no penalizer gives a fit at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lifetimes import ParetoNBDFitter
        from lifetimes.utils import ConvergenceError

    s = summary(ledger, cutoff)
    if s.known.sum() < 50:
        return None
    sample, weights = _condensed(s)
    fits: list[tuple[int, tuple[float, ...]]] = []  # (customers lifetimes fails, params)
    for penalizer in _PENALIZERS:
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                # From lifetimes' own starting point without its noise (it draws
                # N(1, 0.05) from numpy's global generator): a build is repeatable.
                model = ParetoNBDFitter(penalizer_coef=penalizer).fit(
                    sample[:, 0], sample[:, 1], sample[:, 2], weights, initial_params=np.ones(4)
                )
        except ConvergenceError:
            continue
        params = tuple(float(model.params_[name]) for name in ("r", "alpha", "s", "beta"))
        failed = int((~np.isfinite(_pareto_none(params, s)[s.known])).sum())
        # An unpenalized fit can run off to a huge s and beta (CDNOW's sample file at
        # 1997-06-15: s ~ 130) where lifetimes' hypergeometric terms answer NaN for a
        # few customers; the next penalizer holds it back.
        if not failed:
            return params, churn_with(params, ledger, cutoff, s)
        fits.append((failed, params))
    if not fits:
        return None
    # Every fit fails somebody: a buyer with hundreds of orders, the last on the cut-off
    # day, is NaN under any parameters. The fit failing fewest serves, those customers
    # answered by ``churn_with``'s bound: one such buyer once left the shop unscored.
    params = min(fits, key=lambda fit: fit[0])[1]
    return params, churn_with(params, ledger, cutoff, s)


def _pareto_none(params: tuple[float, ...], s: Summary) -> Floats:
    """lifetimes' Pareto/NBD probability of no purchase in the ``CHURN_DAYS`` after the
    cut-off, per known customer's pattern (NaN where its closed form fails, and for the
    unknown)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pandas as pd  # type: ignore[import-untyped]
        from lifetimes import ParetoNBDFitter

    model = ParetoNBDFitter()
    model.params_ = pd.Series(dict(zip(("r", "alpha", "s", "beta"), params, strict=True)))
    patterns, inverse = np.unique(
        np.column_stack([s.x, s.t_x, s.age])[s.known], axis=0, return_inverse=True
    )
    none = np.full(len(s.x), np.nan)
    if len(patterns):
        with np.errstate(all="ignore"):
            found = model.conditional_probability_of_n_purchases_up_to_time(
                0, CHURN_DAYS / 7.0, patterns[:, 0], patterns[:, 1], patterns[:, 2]
            )
        none[s.known] = np.asarray(found, np.float64)[inverse.reshape(-1)]
    return none


def churn_with(
    params: tuple[float, ...], ledger: Ledger, cutoff: int, s: Summary | None = None
) -> Floats:
    """Pareto/NBD's (r, alpha, s, beta) answer per customer of ``ledger``: the
    probability of no purchase in the ``CHURN_DAYS`` after ``cutoff`` given their
    history (NaN for a customer with none): how a build and a refresh score.

    Where lifetimes' closed form fails (NaN: a buyer with hundreds of repeat orders, the
    last on the cut-off day, whose hypergeometric terms overflow), the answer is the
    chance of no purchase while alive, ((alpha + T) / (alpha + T + t)) ** (r + x): the
    posterior purchase rate's, Gamma(r + x, alpha + T). Such a customer is alive for
    all the model can tell (P(alive) -> 1 as their orders pile up to the cut-off), and a
    dropout in the window only adds the chance of dying before buying, ~mu / lambda,
    negligible at their rate."""
    s = s or summary(ledger, cutoff)
    none = _pareto_none(params, s)
    r, alpha = params[0], params[1]
    weeks = CHURN_DAYS / 7.0
    with np.errstate(all="ignore"):
        alive = ((alpha + s.age) / (alpha + s.age + weeks)) ** (r + s.x)
    none = np.where(s.known & ~np.isfinite(none), alive, none)
    return np.where(s.known, np.clip(none, 0.0, 1.0), np.nan)


def bgnbd_churn(params: tuple[float, ...], ledger: Ledger, cutoff: int) -> Floats:
    """The same probability from a BG/NBD fit: a refresh after a build that stored no
    Pareto/NBD fit (built before it had one) scores its customers so until the next
    build (on CDNOW level with recency alone, where 1 - P(alive) ranked backwards)."""
    model = answer(params, ledger, cutoff, CHURN_DAYS)
    known = ledger.span(cutoff)[3]
    return np.where(known, 1.0 - model.p_purchase, np.nan)


def answer(
    params: tuple[float, ...],
    ledger: Ledger,
    cutoff: int,
    horizon_days: int,
    s: Summary | None = None,
) -> BgNbd:
    """A fitted model's (r, alpha, a, b) answers for the customers of ``ledger``: how
    ``gateway scores refresh`` scores a few customers with the last build's fit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pandas as pd
        from lifetimes import BetaGeoFitter

    s = s or summary(ledger, cutoff)
    k = s.known
    r, alpha, a, b = params
    model = BetaGeoFitter()
    model.params_ = pd.Series({"r": r, "alpha": alpha, "a": a, "b": b})
    rows = np.column_stack([s.x, s.t_x, s.age])
    patterns, inverse = np.unique(rows[k], axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    x, t_x, age = patterns[:, 0], patterns[:, 1], patterns[:, 2]
    weeks = horizon_days / 7.0
    p_alive = np.zeros(ledger.size)
    expected = np.zeros(ledger.size)
    if len(patterns):
        with np.errstate(all="ignore"):
            p_alive[k] = np.asarray(model.conditional_probability_alive(x, t_x, age))[inverse]
            expected[k] = np.asarray(
                model.conditional_expected_number_of_purchases_up_to_time(weeks, x, t_x, age)
            )[inverse]
    with np.errstate(all="ignore"):
        none_in = ((alpha + s.age) / (alpha + s.age + weeks)) ** (r + s.x)
        # Dropout only takes purchases away: alive, a customer's expected purchases are
        # their Gamma posterior rate times the horizon, so the BG/NBD expectation is at
        # most P(alive) times that (and equals it as a -> 0, no dropout). lifetimes'
        # closed form goes through a hypergeometric function whose third argument,
        # a + b + x - 1, nears the pole at -1 for a one-time buyer when the fit's a and
        # b collapse towards 0 (a small shop: 300 demo customers gave a ~ 1e-21): it
        # answered inf, kept as the largest float, and the scores build failed.
        bound = np.where(k, p_alive * (r + s.x) / (alpha + s.age) * weeks, 0.0)
        expected = np.where(np.isfinite(expected), np.clip(expected, 0.0, bound), bound)
    p_purchase = np.where(k, p_alive * (1.0 - none_in), 0.0)
    return BgNbd(r, alpha, a, b, p_alive, np.nan_to_num(expected), np.nan_to_num(p_purchase))
