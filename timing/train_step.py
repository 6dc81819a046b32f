#!/usr/bin/env python
"""Training-step throughput of MGLLaVAModel on workloads A and B of shared/spec/upstream_gpu_baseline.md.

  A  MG-LLaVA pretrain: Vicuna-7B-sized Llama, LLM frozen (projector + fuse + bbox_projector trained)
  B  MG-LLaVA SFT: Qwen2-1.5B-sized LLM, LLM trained too
  Both: CLIP ViT-L/14-336 and ConvNeXt-L at 768 px frozen (bf16, eval, no_grad), random init at real sizes;
  bs 8, each sample 600 text tokens + <image> at position 5 -> 576 image + 30 box tokens (seq 1206), the last
  300 tokens supervised. Step: H2D of the pinned batch (model.data_preprocessor), bf16 autocast, loss, backward,
  clip_grad_norm_ 1.0, AdamW (fused on CUDA), zero_grad. 3 warm-up + 12 timed steps, median.

  python timing/train_step.py                      # A and B on CUDA, tiny on CPU
  python timing/train_step.py --workload B --liger --compile --object-pooling fast
  python timing/train_step.py --tiny               # seconds on CPU, same code path
Prints one JSON line per workload on stdout; human-readable logs go to stderr.
"""
import argparse
import gc
import json
import math
import resource
import statistics
import sys
import time

_STDOUT, sys.stdout = sys.stdout, sys.stderr  # library chatter must not pollute the JSON on stdout

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import (AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel, LlamaConfig,  # noqa: E402
                          Qwen2Config)
from xtuner.utils import IGNORE_INDEX, IMAGE_TOKEN_INDEX  # noqa: E402

from mg_llava.data import mg_llava_collate_fn  # noqa: E402
from mg_llava.models import ConvNeXtTower, MGLLaVAModel  # noqa: E402

CLIP_L336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                 image_size=336, patch_size=14, projection_dim=768)
REAL = dict(clip=CLIP_L336, convnext=('convnext_large', {}), aux_size=768, batch_size=8, text=600, image_pos=5,
            boxes=30, supervised=300, warmup=3, steps=12)
WORKLOADS = {
    'A': dict(REAL, llm=(LlamaConfig, dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                                           intermediate_size=11008, vocab_size=32000)),
              train_llm=False, upstream_samples_per_s=7.27),
    'B': dict(REAL, llm=(Qwen2Config, dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                                           num_key_value_heads=2, intermediate_size=8960, vocab_size=151936,
                                           tie_word_embeddings=True, rope_theta=1e6)),
              train_llm=True, upstream_samples_per_s=14.49),
    'tiny': dict(llm=(LlamaConfig, dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=128, vocab_size=1000)),
                 clip=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                           image_size=56, patch_size=14),
                 convnext=('convnext_atto', dict(dims=(8, 8, 16, 16))), aux_size=128, batch_size=2, text=40,
                 image_pos=5, boxes=3, supervised=20, warmup=1, steps=2, train_llm=True,
                 upstream_samples_per_s=None),
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workload', choices=list(WORKLOADS), action='append',
                   help='repeatable; default: A and B on CUDA, tiny otherwise')
    p.add_argument('--tiny', action='store_true', help='same as --workload tiny')
    p.add_argument('--steps', type=int, help='timed steps (default 12; tiny 2)')
    p.add_argument('--warmup', type=int, help='warm-up steps (default 3; tiny 1)')
    p.add_argument('--batch-size', type=int)
    p.add_argument('--lr', type=float, default=1e-4)
    p.add_argument('--llm', choices=['frozen', 'trained'], help="override the workload's LLM mode")
    p.add_argument('--activation-checkpointing', action='store_true', help='on the LLM (our model does LLM only)')
    p.add_argument('--object-pooling', choices=['exact', 'fast'], default='exact')
    p.add_argument('--compile', action='store_true', help='torch.compile each LLM decoder layer')
    p.add_argument('--liger', action='store_true', help="llm_kernels='liger': fused RoPE/RMSNorm/SwiGLU and LM head + "
                                                        'cross-entropy (CUDA, liger-kernel installed)')
    p.add_argument('--adapter-dtype', choices=['fp32', 'bf16'], default='fp32',
                   help='trained projector/fuse/bbox_projector weights (the model would give them the tower '
                        'dtype, bf16 here; upstream trains them in fp32)')
    p.add_argument('--cpu-bf16', action='store_true', help='bf16 autocast on CPU too (default fp32 on CPU)')
    p.add_argument('--peak-tflops', type=float, help='for MFU; default 989 (H100/H200 bf16 dense) on CUDA, '
                                                     'none on CPU. The spec quoted MFU at 800')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = p.parse_args(argv)
    args.workload = ['tiny'] if args.tiny else args.workload or (['A', 'B'] if args.device == 'cuda' else ['tiny'])
    return args


def liger_available():
    """The model applies it (MGLLaVAConfig.llm_kernels='liger'); here only: is it installed?"""
    import importlib.util
    if importlib.util.find_spec('liger_kernel') is None:
        log('liger_kernel is not installed: running without it')
        return False
    return True


def build_model(w, args, dev):
    """Random-init LLM and towers of the workload's sizes, built directly on `dev`."""
    tower_dtype = torch.bfloat16 if dev.type == 'cuda' else torch.float32
    llm_cls, llm_kw = w['llm']
    liger = args.liger and dev.type == 'cuda' and liger_available()
    torch.manual_seed(0)
    with torch.device(dev):
        llm = AutoModelForCausalLM.from_config(llm_cls(**llm_kw), torch_dtype=torch.bfloat16 if dev.type == 'cuda'
                                               else torch.float32, attn_implementation='sdpa')
        vit = CLIPVisionModel._from_config(CLIPVisionConfig(**w['clip']), torch_dtype=tower_dtype,
                                           attn_implementation='sdpa')
        name, kw = w['convnext']
        aux = ConvNeXtTower(name, model_kwargs=kw).to(tower_dtype)
        model = MGLLaVAModel(llm=llm, visual_encoder=vit, visual_encoder_aux=aux, freeze_llm=not w['train_llm'],
                             use_activation_checkpointing=args.activation_checkpointing,
                             object_pooling=args.object_pooling, llm_kernels='liger' if liger else None)
    if args.adapter_dtype == 'fp32':
        for m in (model.projector, model.fuse_module, model.bbox_projector):
            m.float()
    model.to(dev)  # a no-op for the weights; points model.data_preprocessor at `dev`
    if args.compile:
        for layer in model.llm.model.layers:
            layer.compile()
    return model.train(), liger


def make_batch(w, T, vocab, seed=0):
    """Per-sample dicts as MGLLaVADataset yields them, collated by mg_llava_collate_fn."""
    g = torch.Generator().manual_seed(seed)
    S, s, K = w['aux_size'], w['clip']['image_size'], w['boxes']
    assert w['supervised'] <= w['text'] - w['image_pos'], 'supervised tokens must all be text after the image'
    samples = []
    for i in range(w['batch_size']):
        text = torch.randint(3, vocab, (w['text'],), generator=g)
        ids = torch.cat([text[:w['image_pos']], torch.full((T + K,), IMAGE_TOKEN_INDEX), text[w['image_pos']:]])
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[-w['supervised']:] = ids[-w['supervised']:]
        aux = torch.randn(3, S, S, generator=g)
        px = F.interpolate(aux[None], size=(s, s), mode='bilinear', align_corners=False)[0]
        wh = torch.exp(torch.empty(K, 2).uniform_(math.log(S / 32), math.log(S / 2), generator=g))
        xy = torch.rand(K, 2, generator=g) * (S - wh)
        samples.append(dict(id=f's{i}', input_ids=ids, labels=labels, pixel_values=px, pixel_values_aux=aux,
                            boxes=torch.cat([xy, xy + wh], 1), num_image_tokens=T))
    return mg_llava_collate_fn(samples)


def pin(x):
    if isinstance(x, torch.Tensor):
        return x.pin_memory()
    if isinstance(x, dict):
        return {k: pin(v) for k, v in x.items()}
    return x


def matmul_weights(module):
    """N: weights of Linear/Conv layers (embedding lookups excluded; lm_head is a Linear, so included)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


def model_flops(model, w, bs, seq, train_llm):
    """The spec's model FLOPs per step: LLM (6 or 4)NT + 3A, towers forward only, adapters 6NT."""
    c = model.llm.config
    head_dim = getattr(c, 'head_dim', None) or c.hidden_size // c.num_attention_heads
    attn = 2 * seq ** 2 * c.num_attention_heads * head_dim * c.num_hidden_layers * bs  # causal forward
    llm = (6 if train_llm else 4) * matmul_weights(model.llm) * bs * seq + 3 * attn
    v = model.visual_encoder.config
    n_vit = (v.image_size // v.patch_size) ** 2 + 1
    clip = bs * (2 * matmul_weights(model.visual_encoder) * n_vit  # all layers, as the spec counts them
                 + 4 * n_vit ** 2 * v.hidden_size * v.num_hidden_layers)  # full (non-causal) attention
    aux, S = model.visual_encoder_aux, w['aux_size']  # conv/linear MACs at each stage's resolution
    convnext = bs * 2 * (matmul_weights(aux.stem) * (S // 4) ** 2
                         + sum(matmul_weights(st) * (S // 2 ** (k + 2)) ** 2 for k, st in enumerate(aux.stages)))
    T = model.num_image_tokens
    adapters = 6 * bs * ((matmul_weights(model.projector) + matmul_weights(model.fuse_module)) * T
                         + matmul_weights(model.bbox_projector) * w['boxes'])
    return dict(llm=llm, clip=clip, convnext=convnext, adapters=adapters)


def train_one_step(model, batch, amp, params, opt):
    """H2D of the (pinned) batch as mmengine's train_step does, autocast forward, backward, clip 1.0, AdamW step."""
    data = model.data_preprocessor(batch, True)
    with torch.autocast(**amp):
        loss = model(**data, mode='loss')['loss']
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def run(name, args, dev):
    w = dict(WORKLOADS[name])
    for key in ('batch_size', 'steps', 'warmup'):
        if getattr(args, key) is not None:
            w[key] = getattr(args, key)
    if args.llm:
        w['train_llm'] = args.llm == 'trained'
    cuda = dev.type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    model, liger = build_model(w, args, dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=0.0, fused=cuda)
    batch = make_batch(w, model.num_image_tokens, model.llm.config.vocab_size)
    batch = pin(batch) if cuda else batch
    bs, seq = batch['data']['input_ids'].shape
    log(f'[{name}] built in {time.perf_counter() - t0:.1f} s on {dev}: {sum(p.numel() for p in params) / 1e6:.1f} M '
        f'trained params, LLM {"trained" if w["train_llm"] else "frozen"}, batch {bs} x {seq}')
    use_amp = cuda or args.cpu_bf16
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for i in range(w['warmup'] + w['steps']):
        sync()
        t = time.perf_counter()
        losses.append(train_one_step(model, batch, amp, params, opt))
        sync()
        times.append((time.perf_counter() - t) * 1e3)
        log(f'[{name}] step {i:2d}{" (warm-up)" if i < w["warmup"] else ""}: {times[-1]:8.1f} ms, '
            f'loss {losses[-1].item():.4f}')
    losses = [x.item() for x in losses]
    assert all(math.isfinite(x) for x in losses), f'non-finite loss: {losses}'
    step_ms = times[w['warmup']:]
    ms = statistics.median(step_ms)
    peak_mem = (torch.cuda.max_memory_allocated() if cuda
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 30
    flops = model_flops(model, w, bs, seq, w['train_llm'])
    peak_tflops = args.peak_tflops or (989.0 if cuda else None)
    sps = bs / (ms / 1e3)
    upstream = w['upstream_samples_per_s']
    if cuda and losses[-1] >= losses[0]:
        log(f'[{name}] WARNING: loss did not fall over {len(losses)} steps: {losses[0]:.4f} -> {losses[-1]:.4f}')
    result = dict(
        workload=name, device=torch.cuda.get_device_name(dev) if cuda else 'cpu', ms_per_step=round(ms, 2),
        step_ms=[round(t, 2) for t in step_ms], samples_per_s=round(sps, 3), tokens_per_s=round(sps * seq, 1),
        supervised_tokens_per_s=round(sps * w['supervised'], 1),
        mfu=round(sum(flops.values()) / (ms / 1e3) / (peak_tflops * 1e12), 4) if peak_tflops else None,
        peak_tflops=peak_tflops, model_tflop_per_step={k: float(f'{v / 1e12:.4g}') for k, v in flops.items()},
        peak_mem_gib=round(peak_mem, 3), peak_mem_kind='cuda max_memory_allocated' if cuda else 'process peak RSS',
        seq_len=seq, batch_size=bs, supervised_per_sample=w['supervised'], text_tokens=w['text'],
        image_tokens=model.num_image_tokens, boxes_per_sample=w['boxes'], loss_first=losses[0], loss_last=losses[-1],
        upstream_samples_per_s=upstream, speedup_vs_upstream=round(sps / upstream, 3) if upstream else None,
        llm_trained=w['train_llm'], activation_checkpointing=args.activation_checkpointing,
        object_pooling=args.object_pooling, compile=args.compile, liger=bool(liger), adapter_dtype=args.adapter_dtype,
        autocast_bf16=use_amp, lr=args.lr, warmup=w['warmup'], first_step_ms=round(times[0], 1),
        torch=torch.__version__)
    log(f'[{name}] median {ms:.1f} ms/step, {sps:.2f} samples/s, peak {peak_mem:.2f} GiB'
        + (f', {sps / upstream:.2f}x upstream' if upstream else ''))
    del model, opt, batch, params
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def main(argv=None):
    args = parse_args(argv)
    dev = torch.device(args.device)
    for name in args.workload:
        _STDOUT.write(json.dumps(run(name, args, dev)) + '\n')
        _STDOUT.flush()


if __name__ == '__main__':
    main()
