"""Vision spec vs tower geometry, checked from the configs alone: no weights loaded, no data read.

A mismatch otherwise passes every data check and only surfaces at training step 1, as HF's
`Input image size (336*336) doesn't match model (56*56)` or as a fusion grid error. The rules:

* the low-res view side `vision_spec.image_size` (s) is the ViT's `image_size` (its position embeddings are
  fixed) and a multiple of its `patch_size` (p);
* the dataset lays out `num_image_tokens` = (s // p) ** 2 slots per image, the tokens the ViT gives (CLS dropped);
* the high-res side `vision_spec.image_size_aux` (S) is a multiple of the ConvNeXt total stride (32: stages are
  S/4, S/8, S/16, S/32), and exists when the model has a ConvNeXt tower;
* with Conv-Gate fusion and `fusion_resample=False`, the last ConvNeXt grid S/32 equals the ViT grid s/p
  (`ConvGateFusion` raises otherwise; with resampling on it interpolates).

`geometry_errors` is the one place these rules live; `check_config_geometry` applies it to a training config
(tools/check_dataset.py) and `MGLLaVAModel.encode_visual` to the first batch it sees.
"""
from .preprocess import VisionSpec

CONVNEXT_STRIDE = 32   # ConvNeXtTower: stem /4, then three /2 downsamplings -> last stage S/32


def read_vit_config(path):
    """Local HF dir of the low-res tower -> its vision config (`image_size`, `patch_size`, `model_type`).

    Reads config.json only. A full CLIPModel / SiglipModel dir nests the tower's config as `vision_config`.
    """
    from transformers import AutoConfig
    cfg = AutoConfig.from_pretrained(path)
    return getattr(cfg, 'vision_config', cfg)


def tower_name(vit_config, path=None):
    """'the CLIP tower at PATH' (or SigLIP), for messages."""
    kind = 'SigLIP' if 'siglip' in str(getattr(vit_config, 'model_type', '')).lower() else 'CLIP'
    return f'the {kind} tower' + (f' at {path}' if path else '')


def geometry_errors(image_size, image_size_aux, num_image_tokens, vit_image_size, patch_size, *,
                    tower='the CLIP tower', has_aux=True, fusion=True, fusion_resample=True):
    """Data side (vision_spec sizes s and S, num_image_tokens T) vs towers (ViT image size and patch, whether a
    ConvNeXt tower and fusion exist and whether fusion resamples) -> list of messages, [] when consistent.

    Each message names the config keys, their values, what the tower needs and the setting that fixes it.
    """
    s, S, T, vs, p = image_size, image_size_aux, num_image_tokens, vit_image_size, patch_size
    g = vs // p                      # the ViT token grid side
    errors = []
    if s != vs:
        errors.append(f'vision_spec.image_size={s} but {tower} takes {vs} px images (patch {p} -> {g * g} tokens); '
                      f'set vision_spec image_size={vs} and num_image_tokens={g * g}')
    elif T != g * g:   # (with a wrong image size, the message above already gives the token count)
        errors.append(f'num_image_tokens={T} but {tower} gives {g * g} tokens per image ({vs} px / patch {p} = '
                      f'{g}x{g} grid); set num_image_tokens={g * g}')
    if s % p:
        errors.append(f'vision_spec.image_size={s} is not a multiple of the patch size {p} of {tower}')
    if not has_aux:
        return errors
    if S is None:
        errors.append(f'the model has a high-res tower (model.visual_encoder_aux) but vision_spec.image_size_aux=None '
                      f'gives it no image; set vision_spec image_size_aux (e.g. {CONVNEXT_STRIDE * g})')
        return errors
    if S % CONVNEXT_STRIDE:
        errors.append(f'vision_spec.image_size_aux={S} is not a multiple of the ConvNeXt total stride '
                      f'{CONVNEXT_STRIDE}; set vision_spec image_size_aux to a multiple of {CONVNEXT_STRIDE} '
                      f'(e.g. {CONVNEXT_STRIDE * max(1, round(S / CONVNEXT_STRIDE))})')
    elif fusion and not fusion_resample and S // CONVNEXT_STRIDE != g:
        errors.append(f'model.fusion_resample=False needs the last ConvNeXt grid to equal the ViT token grid, but '
                      f'vision_spec.image_size_aux={S} gives {S // CONVNEXT_STRIDE}x{S // CONVNEXT_STRIDE} '
                      f'(/{CONVNEXT_STRIDE}) and {tower} {g}x{g}; set vision_spec image_size_aux='
                      f'{CONVNEXT_STRIDE * g} or model.fusion_resample=True')
    return errors


def check_config_geometry(model_cfg, dataset_cfg):
    """A training config's `model` dict and its completed dataset dict (mg_llava.engine.wiring fills the vision
    spec and image-token count from the model) -> list of geometry errors.

    [] when consistent, or when the model's ViT is not a local folder to read.
    """
    vit = model_cfg.get('visual_encoder')
    path = vit.get('pretrained_model_name_or_path') if isinstance(vit, dict) else vit
    if not isinstance(path, str):
        return []
    try:
        vit_cfg = read_vit_config(path)
    except (OSError, ValueError) as e:   # missing dir / not an HF config: training could not build the tower either
        return [f'cannot read the vision tower config (model.visual_encoder={path!r}): {type(e).__name__}: {e}']
    try:
        spec = VisionSpec(**dict(dataset_cfg.get('vision_spec') or {}))
    except (TypeError, ValueError) as e:
        return [f'model.vision_spec: {e}']
    return geometry_errors(
        spec.image_size, spec.image_size_aux, dataset_cfg.get('num_image_tokens', 576), vit_cfg.image_size,
        vit_cfg.patch_size, tower=tower_name(vit_cfg, path),
        has_aux=model_cfg.get('visual_encoder_aux') is not None,
        fusion=model_cfg.get('use_fusion', True), fusion_resample=model_cfg.get('fusion_resample', True))
