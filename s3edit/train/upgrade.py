"""Carry a trained autoencoder over to a new conditioning without losing what it has learnt."""

from __future__ import annotations

import torch

from s3edit.model.autoencoder import DiffusionFaceAutoencoder
from s3edit.train.autoencoder import FaceBatchSource


def upgrade(old: DiffusionFaceAutoencoder, fresh_fusion: bool, prediction: str | None,
            template_resolution: int | None, train: FaceBatchSource,
            attribute_dim: int | None = None) -> DiffusionFaceAutoencoder:
    """The same decoder under the new conditioning (see scripts/upgrade_autoencoder.py).

    `train.clip_code` must already have the new model's attribute part.
    """
    config = {k: v for k, v in old.config.items() if not k.startswith("_")}
    config["prediction_type"] = prediction or config["prediction_type"]
    config["template_resolution"] = template_resolution or config["template_resolution"]
    config["attribute_dim"] = config.get("attribute_dim", 0) if attribute_dim is None \
        else attribute_dim
    new = DiffusionFaceAutoencoder(**config)
    state = old.state_dict()
    if config["template_resolution"] and not old.config.template_resolution:
        weight = state["unet.conv_in.weight"]
        state["unet.conv_in.weight"] = torch.cat([weight, torch.zeros_like(weight)], 1)
    old_dim, new_dim = old.clip_code_dim, new.clip_code_dim
    if new_dim != old_dim or config["template_resolution"] != old.config.template_resolution:
        state = {k: v for k, v in state.items() if not k.startswith("code_template.")}
    if new_dim > old_dim:
        # New code columns enter the fusion at zero weight: the old function is kept.
        weight = state["fusion.0.weight"]
        state["fusion.0.weight"] = torch.cat([weight[:, :old_dim],
                                              weight.new_zeros(len(weight), new_dim - old_dim),
                                              weight[:, old_dim:]], 1)
        codes = train.clip_code[:, old_dim:new_dim]
        for name, stat in (("code_mean", codes.mean(0)),
                           ("code_std", codes.std(0).clamp(min=1e-4))):
            state[name] = torch.cat([state[name][:old_dim], stat, state[name][old_dim:]])
    missing, unexpected = new.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"code_template.weight", "code_template.bias"}
    with torch.no_grad():
        if fresh_fusion:
            old_codes = train.clip_code[:, :old_dim]
            mean_z = old.z_face(old_codes, train.landmarks)[:, :new.fusion[-1].out_features]
            new.set_code_statistics(train.clip_code, train.landmarks)
            for layer in new.fusion:
                if isinstance(layer, torch.nn.Linear):
                    layer.reset_parameters()
            new.fusion[-1].weight.zero_()
            new.fusion[-1].bias.copy_(mean_z.mean(0))
        if missing:
            new.fit_code_template(train.clip_code, train.landmarks, train.images)
    return new
