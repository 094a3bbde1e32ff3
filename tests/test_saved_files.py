"""Files written by earlier versions of the package still load and compute the same."""

import os

import keras
import numpy as np
from support import REPO

DATA = os.path.join(REPO, "tests", "data")


def test_a_keras_file_from_before_the_redesign_loads_with_its_settings_and_logits():
    # Written by commit 4213183's code (flat modules: atalp_tf.model, atalp_tf.preprocessing,
    # atalp_tf.optimization), with every registered class the package saves: the classifier,
    # the caffe preprocessing layer and the one-cycle schedule of its optimizer.
    from atalp_tf.runs.loading import load_classifier

    path = os.path.join(DATA, "before_redesign.keras")
    model = load_classifier(path)
    assert (model.method, model.alpha, model.beta) == ("at_alp", 0.25, 2.0)
    assert model.attack == "fgsm_rs" and model.clean_ce_weight == 0.5 and model.bn_batches == "separate"
    assert model.train_attack.steps == 2 and model.eval_attack.steps == 3
    saved = np.load(os.path.join(DATA, "before_redesign_io.npz"))
    np.testing.assert_allclose(model.predict(saved["x"], verbose=0), saved["logits"], rtol=1e-5, atol=1e-6)
    compiled = keras.saving.load_model(path)  # with its optimizer and learning-rate schedule
    assert type(compiled.optimizer.learning_rate).__name__ != "NoneType"
    assert compiled.optimizer._learning_rate.get_config() == {"peak": 0.1, "total_steps": 100, "rise": 0.4}
