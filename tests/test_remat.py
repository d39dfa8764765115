"""Rematerialisation changes memory, never results: losses and gradients equal the plain model's."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert.config import model_config
from bert.model import BertForPreTraining, init_params
from bert.train import PretrainingTask, make_loss_fn
from tests.fakes import random_batch, tiny_config


def _loss_and_grads(remat: str, params, batch):
    model = BertForPreTraining(model_config(tiny_config(**{"model.remat": remat})))
    loss_fn = make_loss_fn(PretrainingTask(model, 1.0))
    denominators = (jnp.sum(batch["masked_lm_weights"]), jnp.sum(batch["next_sentence_weights"]))
    (loss, _), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        params, batch, jax.random.key(3), denominators)
    return loss, grads


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_gives_the_same_loss_and_gradients_with_dropout_on(remat):
    model = BertForPreTraining(model_config(tiny_config()))
    params = init_params(model, jax.random.key(0))
    batch = {k: jnp.asarray(v) for k, v in random_batch().items()}
    plain_loss, plain_grads = _loss_and_grads("none", params, batch)
    loss, grads = _loss_and_grads(remat, params, batch)
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
    for (path, g), g_plain in zip(jax.tree_util.tree_leaves_with_path(grads),
                                  jax.tree_util.tree_leaves(plain_grads)):
        np.testing.assert_allclose(g, g_plain, rtol=1e-5, atol=1e-6,
                                   err_msg=jax.tree_util.keystr(path))
