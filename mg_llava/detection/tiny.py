"""Tiny random-init OWLv2 detector and CLIP tagger, saved like hub checkpoints (tests, offline demos).

No download: the tokenizer is a byte-level CLIP BPE with an empty merge table (one token per character),
the models are random-init `Owlv2ForObjectDetection` / `CLIPModel` with a few thousand parameters. Both
directories load with `from_pretrained` exactly as the real `google/owlv2-*` / `openai/clip-*` do.
"""
import json
import os.path as osp
import tempfile

BOS, EOS = '<|startoftext|>', '<|endoftext|>'


def build_clip_tokenizer(model_max_length=32):
    """CLIPTokenizerFast over the 256 byte-level symbols (+ their end-of-word forms); BOS/EOS ids last."""
    from transformers import CLIPTokenizerFast
    from transformers.models.clip.tokenization_clip import bytes_to_unicode
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + '</w>' for c in chars] + [BOS, EOS]
    with tempfile.TemporaryDirectory() as folder:
        with open(osp.join(folder, 'vocab.json'), 'w', encoding='utf-8') as f:
            json.dump({t: i for i, t in enumerate(tokens)}, f, ensure_ascii=False)
        with open(osp.join(folder, 'merges.txt'), 'w', encoding='utf-8') as f:
            f.write('#version: 0.2\n')
        return CLIPTokenizerFast(osp.join(folder, 'vocab.json'), osp.join(folder, 'merges.txt'),
                                 model_max_length=model_max_length, bos_token=BOS, eos_token=EOS,
                                 pad_token=EOS, unk_token=EOS)


def _text_config(tok, hidden=32, layers=2, heads=2):
    return dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, max_position_embeddings=tok.model_max_length,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def _vision_config(image_size, patch_size, hidden=32, layers=2, heads=2):
    return dict(image_size=image_size, patch_size=patch_size, hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=layers, num_attention_heads=heads)


def build_tiny_owlv2(folder, image_size=64, patch_size=16, seed=0):
    """Random-init Owlv2ForObjectDetection + Owlv2Processor saved in `folder`; returns `folder`."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor
    tok = build_clip_tokenizer()
    cfg = Owlv2Config(text_config=_text_config(tok), vision_config=_vision_config(image_size, patch_size),
                      projection_dim=32)
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(cfg).eval()
    processor = Owlv2Processor(Owlv2ImageProcessor(size={'height': image_size, 'width': image_size}), tok)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_clip(folder, image_size=32, patch_size=8, seed=0):
    """Random-init CLIPModel + CLIPProcessor saved in `folder`; returns `folder`."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor
    tok = build_clip_tokenizer()
    cfg = CLIPConfig(text_config=_text_config(tok), vision_config=_vision_config(image_size, patch_size),
                     projection_dim=32)
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    image_processor = CLIPImageProcessor(size={'shortest_edge': image_size},
                                         crop_size={'height': image_size, 'width': image_size})
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(folder)
    return folder
