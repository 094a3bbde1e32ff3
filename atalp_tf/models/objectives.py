"""The training objectives, one loss function per method (B is the global batch, every term a
mean over it):

=========  ==================================================================================
standard   CE(f(x), y)
pat        CE(f(x_adv), y)                                        Madry et al. PGD training
alp        CE_w + alpha * LP(x, x_adv)                            adversarial logit pairing
at         CE_w + beta * AT(x, x_adv)                             attention pairing alone
at_alp     CE_w + alpha * LP(x, x_adv) + beta * AT                Li et al. 2022
trades     CE(f(x), y) + trades_beta * KL(f(x) || f(x_adv))       Zhang et al. 2019
=========  ==================================================================================

``CE_w = (1 - w) CE(f(x_adv), y) + w CE(f(x), y)`` with ``w = clean_ce_weight``. The paper's
Eq. 2 writes L_CE without saying on which examples; ``w = 0`` (the default) reads it as the
adversarial examples' CE, and ``w = 0.5`` is Kannan et al.'s released ALP code, which trains
on the mixed batch (half clean, half adversarial), so the ``alp`` baseline of the paper setups
uses 0.5. LP, AT and KL are defined in ``atalp_tf.losses``.

What each method needs beside its loss (adversarial examples, a clean half, a clean CE share,
its reference's batch norm) is its row of ``atalp_tf.choices.OBJECTIVES``. Adding a method is
that row and its loss function here, in ``LOSSES``.

A loss function takes the classifier (for its weights alpha, beta, trades_beta and
clean_ce_weight), the labels, and the backbone's outputs (dicts) for the clean and the
adversarial batch (None where the method has none), and returns the per-example terms (with
``"loss"``, their weighted sum) and the logits whose accuracy is reported.
"""

from atalp_tf import losses
from atalp_tf.choices import METHODS


def _standard(model, labels, clean, adv):
    ce = losses.cross_entropy(labels, clean["logits"])
    return {"loss": ce, "ce": ce}, {"clean": clean["logits"]}


def _pat(model, labels, clean, adv):
    ce = losses.cross_entropy(labels, adv["logits"])
    return {"loss": ce, "ce": ce}, {"adv": adv["logits"]}


def _pairing(model, labels, clean, adv, logit_pairing, attention_pairing):
    """CE_w, plus the pairing terms asked for."""
    ce = losses.cross_entropy(labels, adv["logits"])
    if model.clean_ce_weight:
        w = model.clean_ce_weight
        ce = (1 - w) * ce + w * losses.cross_entropy(labels, clean["logits"])
    terms = {"ce": ce}
    total = ce
    if logit_pairing:
        terms["logit_pairing"] = losses.logit_pairing(clean["logits"], adv["logits"])
        total += model.alpha * terms["logit_pairing"]
    if attention_pairing:
        terms["attention_pairing"] = losses.attention_pairing(
            [clean[s] for s in model.stages], [adv[s] for s in model.stages]
        )
        total += model.beta * terms["attention_pairing"]
    terms["loss"] = total
    return terms, {"clean": clean["logits"], "adv": adv["logits"]}


def _alp(model, labels, clean, adv):
    return _pairing(model, labels, clean, adv, logit_pairing=True, attention_pairing=False)


def _at(model, labels, clean, adv):
    return _pairing(model, labels, clean, adv, logit_pairing=False, attention_pairing=True)


def _at_alp(model, labels, clean, adv):
    return _pairing(model, labels, clean, adv, logit_pairing=True, attention_pairing=True)


def _trades(model, labels, clean, adv):
    ce = losses.cross_entropy(labels, clean["logits"])
    kl = losses.trades_kl(clean["logits"], adv["logits"])
    terms = {"loss": ce + model.trades_beta * kl, "ce": ce, "trades_kl": kl}
    return terms, {"clean": clean["logits"], "adv": adv["logits"]}


LOSSES = {"standard": _standard, "pat": _pat, "alp": _alp, "at": _at, "at_alp": _at_alp, "trades": _trades}
assert tuple(LOSSES) == METHODS, "every method of atalp_tf.choices.OBJECTIVES needs its loss here"
# Every term a loss can report (the classifier keeps a running mean of each), with the short
# name the progress line shows it under.
TERMS = {"loss": "loss", "ce": "ce", "logit_pairing": "lp", "attention_pairing": "at", "trades_kl": "kl"}

