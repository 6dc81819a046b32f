"""Tiny random-init models + a word-level tokenizer, saved like real checkpoints (offline, deterministic).

Layout written under OUT_DIR:
  tokenizer/  PreTrainedTokenizerFast (tokenizer.json, tokenizer_config.json, special_tokens_map.json).
              WordLevel vocab: <pad>=0 <s>=1 </s>=2 <unk>=3, then sorted words/punctuation. Pre-tokenizer:
              whitespace split + every punctuation char isolated; decoder joins words with spaces and glues
              punctuation back ("USER: What color is the circle? ASSISTANT: red" round-trips exactly).
              Calling the tokenizer with add_special_tokens=True prepends <s> (like Llama).
  llm/        LlamaForCausalLM (hidden 256, 4 layers, 4 heads, intermediate 512, vocab = len(tokenizer),
              max_position_embeddings 512, untied), model.safetensors + config.json + generation_config.json.
  clip_vit/   CLIPVisionModel (image 112, patch 14 -> 8x8=64 patches + CLS, hidden 128, 4 layers, 4 heads,
              intermediate 256) + CLIPImageProcessor (resize shortest edge 112, centre-crop 112, CLIP mean/std).
  convnext/   open_clip checkpoint layout: open_clip_config.json {"model_cfg": {..., "vision_cfg":
              {"timm_model_name": "convnext_atto", ..., "timm_model_kwargs": {"dims": [16, 32, 64, 128],
              "depths": [1, 1, 2, 1]}}}, "preprocess_cfg": {"mean", "std", ...}} and open_clip_pytorch_model.bin,
              a torch.save'd state dict: "visual.trunk.<timm key>" (stem.*, stages.*, head.norm.*) plus
              non-trunk keys (visual.head.mlp.*, text_projection, logit_scale) that loaders must filter out.
              Stage outputs at 256 px: (16,64,64), (32,32,32), (64,16,16), (128,8,8).

Sizes above are the function defaults (used by the tests). The CLI builds PRESETS['demo'] by default: LLM hidden
128 / intermediate 256, CLIP at 56 px (4x4 = 16 image tokens), ConvNeXt config at 128 px (last stage 4x4) —
measured on the demo world, this smaller LLM with fewer image tokens learns shapes within ~600 steps at
~0.1 s/step, where the default sizes had not after 1200 steps at ~0.6 s/step (docs/performance.md).

CLI: python -m mg_llava.demo.tiny_assets OUT_DIR [--world WORLD_DIR] [--seed S] [--preset demo|tests]
"""
import argparse
import json
import time
from pathlib import Path

import torch

from mg_llava.demo import world as W
from mg_llava.evaluation.questions import MC_SUFFIX, SHORT_ANSWER, YES_NO

SPECIAL_TOKENS = {'pad_token': '<pad>', 'bos_token': '<s>', 'eos_token': '</s>', 'unk_token': '<unk>'}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
CHAT_TEXTS = [  # xtuner's vicuna/llava templates and common LLaVA prompts
    'USER: ASSISTANT: ###',
    'A chat between a curious user and an artificial intelligence assistant. The assistant gives '
    "helpful, detailed, and polite answers to the user's questions.",
    'Answer the question using a single word or phrase. <image> image picture photo object objects',
    'yes no left right top bottom above below I you it is are the a an of in on what which where',
    '0 1 2 3 4 5 6 7 8 9 . , ? ! : ; \' " ( ) [ ] { } - _ / * + = % & # @ < >',
]
PRESETS = {
    'tests': {},
    'demo': dict(llm_hidden=128, llm_intermediate=256, clip_kwargs={'image_size': 56},
                 convnext_kwargs={'image_size': 128}),
}
CONVNEXT_DIMS = [16, 32, 64, 128]
CONVNEXT_DEPTHS = [1, 1, 2, 1]


def _pre_tokenizer():
    from tokenizers import pre_tokenizers
    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation('isolated')])


def world_texts(world_dir=None):
    """All texts of the world: the templates rendered with every colour/shape (always), plus every
    conversation value / held-out question / choice found in WORLD_DIR's json files (if given)."""
    texts = [W.CAPTION_PROMPT, 'a an and ,'] + [q + ' ' + a for q, a in W.TEXT_ONLY_QA]
    texts += [MC_SUFFIX, YES_NO, SHORT_ANSWER, 'A. B. C. D. E. F.']  # the benchmark answer formats (bench_formats)
    for tpl, choices in W.QUESTION_TYPES.values():
        texts += choices
        texts += [tpl.format(article=W._article(c), colour=c, shape=s, colour1=c, shape1=s, colour2=c, shape2=s)
                  for c in W.COLOURS for s in W.SHAPES]
    if world_dir is not None:
        wd = Path(world_dir)
        for name in ('pretrain.json', 'sft.json'):
            if (wd / name).exists():
                texts += [t['value'] for s in json.loads((wd / name).read_text()) for t in s['conversations']]
        if (wd / 'heldout.jsonl').exists():
            for line in (wd / 'heldout.jsonl').read_text().splitlines():
                h = json.loads(line)
                texts += [h['question'], h['answer']] + h['choices']
    return texts


def vocabulary(world_dir=None, vocab_words=None):
    """Sorted word list (no special tokens): words of the world, chat templates and `vocab_words`,
    each alphabetic word also in lower-case and Capitalised form."""
    pre = _pre_tokenizer()
    words = set()
    for text in world_texts(world_dir) + CHAT_TEXTS + list(vocab_words or []):
        for w, _ in pre.pre_tokenize_str(text):
            words.add(w)
            if w.isalpha():
                words.update({w.lower(), w.capitalize()})
    return sorted(words - set(SPECIAL_TOKENS.values()))


def build_tokenizer(words, model_max_length=512):
    """transformers.PreTrainedTokenizerFast over a WordLevel model with ids: specials 0-3, then `words`."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast
    specials = [SPECIAL_TOKENS[k] for k in ('pad_token', 'bos_token', 'eos_token', 'unk_token')]
    vocab = {tok: i for i, tok in enumerate(specials + list(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS['unk_token']))
    tok.pre_tokenizer = _pre_tokenizer()
    # WordPiece joins tokens with ' ' and removes it before . , ? ! (cleanup); Replace does the same for ':' ';'
    tok.decoder = decoders.Sequence([decoders.WordPiece(prefix='##', cleanup=True),
                                     decoders.Replace(' :', ':'), decoders.Replace(' ;', ';')])
    bos = SPECIAL_TOKENS['bos_token']
    tok.post_processor = processors.TemplateProcessing(single=f'{bos} $A', pair=f'{bos} $A {bos} $B',
                                                       special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length,
                                   clean_up_tokenization_spaces=False, **SPECIAL_TOKENS)


def build_llm(tokenizer, llm_hidden=256, llm_layers=4, llm_heads=4, llm_intermediate=512,
              max_position_embeddings=512, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = dict(vocab_size=len(tokenizer), hidden_size=llm_hidden, num_hidden_layers=llm_layers,
               num_attention_heads=llm_heads, num_key_value_heads=llm_heads, intermediate_size=llm_intermediate,
               max_position_embeddings=max_position_embeddings, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
               tie_word_embeddings=False, torch_dtype='float32')
    cfg.update(overrides)
    return LlamaForCausalLM(LlamaConfig(**cfg))


def build_clip(image_size=112, patch_size=14, hidden_size=128, num_layers=4, num_heads=4, intermediate_size=256):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel
    cfg = CLIPVisionConfig(image_size=image_size, patch_size=patch_size, hidden_size=hidden_size,
                           num_hidden_layers=num_layers, num_attention_heads=num_heads,
                           intermediate_size=intermediate_size, projection_dim=hidden_size)
    processor = CLIPImageProcessor(size={'shortest_edge': image_size},
                                   crop_size={'height': image_size, 'width': image_size},
                                   image_mean=CLIP_MEAN, image_std=CLIP_STD)
    return CLIPVisionModel(cfg), processor


def build_convnext_checkpoint(dims=CONVNEXT_DIMS, depths=CONVNEXT_DEPTHS, embed_dim=64, image_size=256):
    """(open_clip_config dict, state dict) in the laion open_clip ConvNeXt layout (see module docstring)."""
    import timm
    trunk = timm.create_model('convnext_atto', pretrained=False, num_classes=0, dims=list(dims), depths=list(depths))
    sd = {f'visual.trunk.{k}': v.detach().clone() for k, v in trunk.state_dict().items()}
    width = dims[-1]
    sd['visual.head.mlp.fc1.weight'] = torch.randn(2 * embed_dim, width) * 0.02  # open_clip 'mlp' proj head
    sd['visual.head.mlp.fc1.bias'] = torch.zeros(2 * embed_dim)
    sd['visual.head.mlp.fc2.weight'] = torch.randn(embed_dim, 2 * embed_dim) * 0.02
    sd['text_projection'] = torch.randn(embed_dim, embed_dim) * 0.02
    sd['logit_scale'] = torch.tensor(4.6052)
    config = {
        'model_cfg': {
            'embed_dim': embed_dim,
            'vision_cfg': {'timm_model_name': 'convnext_atto', 'timm_model_pretrained': False, 'timm_pool': '',
                           'timm_proj': 'mlp', 'timm_drop': 0.0, 'timm_drop_path': 0.1, 'image_size': image_size,
                           'timm_model_kwargs': {'dims': list(dims), 'depths': list(depths)}},
            'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': embed_dim, 'heads': 1, 'layers': 1},
        },
        'preprocess_cfg': {'mean': CLIP_MEAN, 'std': CLIP_STD, 'interpolation': 'bicubic',
                           'resize_mode': 'shortest'},
    }
    return config, sd


def build_tiny_assets(out_dir, vocab_words=None, seed=0, llm_hidden=256, llm_layers=4, llm_heads=4,
                      llm_intermediate=512, max_position_embeddings=512, world_dir=None, clip_kwargs=None,
                      convnext_kwargs=None, **llm_overrides):
    """Write tokenizer/, llm/, clip_vit/, convnext/ under out_dir (see module docstring).
    Extra `llm_overrides` go to LlamaConfig; `clip_kwargs` to build_clip; `convnext_kwargs` to
    build_convnext_checkpoint. Same arguments -> identical weights. Returns {name: path}."""
    out = Path(out_dir)
    paths = {k: out / k for k in ('tokenizer', 'llm', 'clip_vit', 'convnext')}
    tokenizer = build_tokenizer(vocabulary(world_dir, vocab_words), model_max_length=max_position_embeddings)
    tokenizer.save_pretrained(paths['tokenizer'])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        llm = build_llm(tokenizer, llm_hidden, llm_layers, llm_heads, llm_intermediate, max_position_embeddings,
                        **llm_overrides)
        llm.save_pretrained(paths['llm'], safe_serialization=True)
        torch.manual_seed(seed + 1)
        clip, processor = build_clip(**(clip_kwargs or {}))
        clip.save_pretrained(paths['clip_vit'], safe_serialization=True)
        processor.save_pretrained(paths['clip_vit'])
        torch.manual_seed(seed + 2)
        config, sd = build_convnext_checkpoint(**(convnext_kwargs or {}))
    paths['convnext'].mkdir(parents=True, exist_ok=True)
    (paths['convnext'] / 'open_clip_config.json').write_text(json.dumps(config, indent=2) + '\n')
    torch.save(sd, paths['convnext'] / 'open_clip_pytorch_model.bin')
    return {'root': str(out), **{k: str(v) for k, v in paths.items()}}


def build_random_model(assets, llm_std=0.1, seed=0, **model_kwargs):
    """A random-init MGLLaVAModel (fusion + object tokens, Vicuna template, all parts trainable) over tiny
    `assets` (build_tiny_assets output). The LLM's matrices are redrawn at std `llm_std`: at its std-0.02 init
    the tiny LLM answers nearly the same words whatever the input, while larger weights make the answers
    depend on the image, the boxes and the prompt, so tests can compare predictions meaningfully."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel
    from xtuner.utils import PROMPT_TEMPLATE

    from mg_llava.models import ConvNeXtTower, MGLLaVAModel
    torch.manual_seed(seed)
    kw = dict(template=PROMPT_TEMPLATE.vicuna, freeze_llm=False, freeze_visual_encoder=False,
              freeze_visual_encoder_aux=False, use_activation_checkpointing=False, max_new_tokens=8)
    kw.update(model_kwargs)
    model = MGLLaVAModel(
        llm=dict(type=AutoModelForCausalLM.from_pretrained, pretrained_model_name_or_path=assets['llm']),
        visual_encoder=dict(type=CLIPVisionModel.from_pretrained, pretrained_model_name_or_path=assets['clip_vit']),
        visual_encoder_aux=dict(type=ConvNeXtTower, model_name_or_path=assets['convnext']),
        tokenizer=dict(type=AutoTokenizer.from_pretrained, pretrained_model_name_or_path=assets['tokenizer']), **kw)
    if llm_std:
        for p in model.llm.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, 0.0, llm_std)
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description='Write tiny random-init LLM/CLIP/ConvNeXt + tokenizer.')
    p.add_argument('out_dir')
    p.add_argument('--world', default=None, help='world dir whose texts must be covered by the vocabulary')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--preset', choices=sorted(PRESETS), default='demo')
    args = p.parse_args(argv)
    t0 = time.time()
    paths = build_tiny_assets(args.out_dir, seed=args.seed, world_dir=args.world, **PRESETS[args.preset])
    print(json.dumps(paths, indent=2))
    print(f'built tiny assets in {time.time() - t0:.1f} s')


if __name__ == '__main__':
    main()
