"""Chat about one image with an exported MG-LLaVA model (`xtuner convert pth_to_hf` output).

    python tools/chat.py EXPORT_DIR --image IMG [--boxes BOX_JSON [--box-id ID]] [--prompt "..."]...
    python tools/chat.py EXPORT_DIR --image IMG --detector OWLV2_DIR (--tags cat dog ... | --tagger CLIP_DIR
                                    --vocabulary tags.txt) [--prompt "..."]...

With --prompt (repeatable) the prompts are answered in turn, as one conversation, and the program exits;
without, it reads questions from stdin ("exit" or EOF quits, "reset" forgets the conversation).
Each turn prints "USER: <question>" then "ASSISTANT: <answer>", the answer streamed as it is generated.
Boxes (for models with object tokens) come from a box json entry (`--boxes`, the format training uses;
`--box-id` picks the entry, optional when the file holds one) or from the detector (`--detector`).
Images and boxes are prepared with the training preprocessing (mg_llava.data.preprocess).
"""
import argparse
import sys

import torch


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('export_dir', help='folder written by `xtuner convert pth_to_hf` (mg_llava_config.json)')
    ap.add_argument('--image', help='the image to talk about (omit for a text-only chat)')
    ap.add_argument('--boxes', help='box json: a list of {id, boxes, scores, labels} (or one such entry)')
    ap.add_argument('--box-id', help='which entry of --boxes belongs to the image')
    ap.add_argument('--detector', metavar='OWLV2_DIR', help='detect boxes on the fly (mg_llava.detection)')
    ap.add_argument('--tags', nargs='+', help='detector queries (OWLv2 is asked for "a photo of <tag>")')
    ap.add_argument('--tagger', metavar='CLIP_DIR', help='instead of --tags: zero-shot CLIP tags from --vocabulary')
    ap.add_argument('--vocabulary', help='tag vocabulary of --tagger, one tag per line')
    ap.add_argument('--prompt', action='append', help='a question; repeat for more turns (no REPL then)')
    ap.add_argument('--system', default='', help='system text placed before the first question')
    ap.add_argument('--max-new-tokens', type=int, help='default: the model\'s max_new_tokens')
    ap.add_argument('--temperature', type=float, default=0.0, help='> 0 samples (default greedy)')
    ap.add_argument('--top-p', type=float, default=0.75)
    ap.add_argument('--top-k', type=int, default=40)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--no-stream', action='store_true', help='print each answer when it is complete')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--dtype', choices=['auto', 'fp32', 'bf16', 'fp16'], default='auto',
                    help='auto: bf16 on GPU, fp32 on CPU')
    args = ap.parse_args(argv)
    if args.boxes and args.detector:
        ap.error('give --boxes or --detector, not both')
    if (args.boxes or args.detector or args.box_id) and not args.image:
        ap.error('boxes need --image')
    if args.box_id and not args.boxes:
        ap.error('--box-id needs --boxes')
    if args.detector and not (args.tags or (args.tagger and args.vocabulary)):
        ap.error('--detector needs --tags TAG ... (or --tagger CLIP_DIR --vocabulary FILE)')
    return args


def main(argv=None):
    args = parse_args(argv)
    from transformers import TextStreamer

    from mg_llava.inference.chat import ChatSession, detect_boxes, load_box_entry  # first: the CPU shims
    from mg_llava.data import load_image
    from mg_llava.errors import DataError, ImageError
    from mg_llava.models import MGLLaVAModel

    try:  # cheap input checks before the model loads
        image = load_image(args.image) if args.image else None
        boxes = load_box_entry(args.boxes, args.box_id) if args.boxes else None
    except (ImageError, DataError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if args.detector:
        try:
            boxes = detect_boxes(image, args.detector, tags=args.tags, tagger_dir=args.tagger,
                                 vocabulary=args.vocabulary, device=args.device)
            print(f'detector: {len(boxes["boxes"])} boxes ({", ".join(dict.fromkeys(boxes["labels"]))})',
                  file=sys.stderr)
        except (RuntimeError, OSError, ValueError) as e:
            print(f'error: {e}', file=sys.stderr)
            return 2

    dtype = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}.get(
        args.dtype, torch.bfloat16 if args.device.startswith('cuda') else torch.float32)
    torch.manual_seed(args.seed)
    try:
        model = MGLLaVAModel.from_pretrained(args.export_dir, torch_dtype=dtype).to(args.device)
    except FileNotFoundError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    session = ChatSession(model, image, boxes=boxes, system=args.system, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    if image is not None:
        print(f'image {args.image}: {model.num_image_tokens} image tokens + {session.num_objects} object tokens',
              file=sys.stderr)

    def turn(question, echo=True):
        if echo:
            print(f'USER: {question}')
        print('ASSISTANT: ', end='', flush=True)
        if args.no_stream:
            print(session.ask(question), flush=True)
        else:
            session.ask(question, streamer=TextStreamer(model.tokenizer, skip_prompt=True,
                                                        skip_special_tokens=True))

    if args.prompt:
        for question in args.prompt:
            turn(question)
        return 0
    interactive = sys.stdin.isatty()
    while True:
        try:
            question = input('USER: ' if interactive else '').strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if question.lower() in ('exit', 'quit'):
            return 0
        if question.lower() == 'reset':
            session.reset()
            print('(conversation reset)', file=sys.stderr)
        elif question:
            turn(question, echo=not interactive)


if __name__ == '__main__':
    sys.exit(main())
