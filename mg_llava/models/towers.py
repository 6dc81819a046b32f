"""Vision towers: the low-res ViT (HF CLIP/SigLIP) and the high-res ConvNeXt trunk.

Both are frozen by default; frozen towers run in eval() under no_grad (the model guarantees it),
so no activation of theirs is ever kept for backward.
"""
import json
import os
import os.path as osp

import timm
import torch
import torch.nn as nn

OPEN_CLIP_CONFIG = 'open_clip_config.json'
OPEN_CLIP_WEIGHTS = ('open_clip_pytorch_model.bin', 'open_clip_model.safetensors')
TRUNK_PREFIX = 'visual.trunk.'


def low_res_features(vit, pixel_values, select_layer=-2):
    """Run an HF CLIP/SigLIP vision model up to the selected layer only.

    pixel_values (N,3,s,s) -> (N,T,D): CLIP drops CLS (T = (s/patch)^2); SigLIP has none.
    Equal to `vit(px, output_hidden_states=True).hidden_states[select_layer][:, 1:]` but stops early,
    so the layers after the selected one cost nothing.
    """
    vm = vit.vision_model if hasattr(vit, 'vision_model') else vit
    layers = vm.encoder.layers
    n_run = len(layers) + 1 + select_layer if select_layer < 0 else select_layer
    if not 0 <= n_run <= len(layers):
        raise ValueError(f'visual_select_layer={select_layer} is out of range for {len(layers)} layers')
    hidden = vm.embeddings(pixel_values.to(vm.embeddings.patch_embedding.weight.dtype))
    is_clip = hasattr(vm, 'pre_layrnorm')
    if is_clip:
        hidden = vm.pre_layrnorm(hidden)
    for layer in layers[:n_run]:
        hidden = layer(hidden, None, None)[0] if is_clip else layer(hidden, None)[0]
    return hidden[:, 1:] if is_clip else hidden


def _read_open_clip_dir(path):
    with open(osp.join(path, OPEN_CLIP_CONFIG)) as f:
        cfg = json.load(f)
    vision = cfg.get('model_cfg', cfg).get('vision_cfg', {})
    name = vision.get('timm_model_name')
    if not name or 'convnext' not in name:
        raise ValueError(f'{path}/{OPEN_CLIP_CONFIG}: vision_cfg.timm_model_name must be a ConvNeXt, got {name!r}')
    weights = next((osp.join(path, w) for w in OPEN_CLIP_WEIGHTS if osp.isfile(osp.join(path, w))), None)
    if weights is None:
        raise FileNotFoundError(f'{path}: none of {OPEN_CLIP_WEIGHTS} found')
    return name, dict(vision.get('timm_model_kwargs', {})), weights


def _load_trunk_state(weights):
    if weights.endswith('.safetensors'):
        from safetensors.torch import load_file
        sd = load_file(weights)
    else:
        sd = torch.load(weights, map_location='cpu', weights_only=True)
    sd = sd.get('state_dict', sd)
    return {k[len(TRUNK_PREFIX):]: v for k, v in sd.items()
            if k.startswith(TRUNK_PREFIX + 'stem.') or k.startswith(TRUNK_PREFIX + 'stages.')}


class ConvNeXtTower(nn.Module):
    """ConvNeXt trunk (stem + 4 stages) returning every stage output.

    `model_name_or_path`: a local open_clip snapshot directory (open_clip_config.json +
    open_clip_pytorch_model.bin, e.g. CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup), or a timm
    ConvNeXt name (random init, or `checkpoint` = a timm state-dict file). Drop-path is forced to 0:
    the open_clip config says 0.1, which upstream leaves active in its frozen tower (feature noise).

    forward: (N,3,S,S) -> [ (N,C0,S/4,S/4), (N,C1,S/8,S/8), (N,C2,S/16,S/16), (N,C3,S/32,S/32) ]
    """

    def __init__(self, model_name_or_path, model_kwargs=None, checkpoint=None):
        super().__init__()
        kwargs = dict(model_kwargs or {})
        state = None
        if osp.isdir(model_name_or_path):
            name, file_kwargs, weights = _read_open_clip_dir(model_name_or_path)
            kwargs = {**file_kwargs, **kwargs}
            state = _load_trunk_state(weights)
        else:
            name = model_name_or_path
            if checkpoint is not None:
                state = torch.load(checkpoint, map_location='cpu', weights_only=True)
        trunk = timm.create_model(name, pretrained=False, num_classes=0, drop_path_rate=0.0, **kwargs)
        self.stem, self.stages = trunk.stem, trunk.stages
        self.out_channels = [int(f['num_chs']) for f in trunk.feature_info]
        if state is not None:
            missing, unexpected = self.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise KeyError(f'{model_name_or_path}: ConvNeXt trunk weights do not match {name}: '
                               f'missing {missing[:5]}..., unexpected {unexpected[:5]}...')
        self.source = dict(model_name_or_path=model_name_or_path, model_kwargs=model_kwargs or None,
                           checkpoint=checkpoint)

    @property
    def dtype(self):
        return self.stem[0].weight.dtype

    def forward(self, pixel_values):
        x = self.stem(pixel_values.to(self.dtype))
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs
