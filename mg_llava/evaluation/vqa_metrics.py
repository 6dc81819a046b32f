"""Per-question scores for open-ended VQA: VQA soft accuracy, ANLS, ChartQA relaxed accuracy, exact match.

Every function scores ONE question and returns a float in [0, 1]; the benchmark averages (x100) live in
`benchmark_metrics`.

* `EvalAIAnswerProcessor` / `normalize_answer`: LLaVA `llava/eval/m4c_evaluator.py` (itself mmf's copy of the
  EvalAI VQA processor): lower-case; drop ',' and '?'; "'s" -> " 's"; newlines/tabs -> space; EvalAI
  punctuation (`answer_extraction.process_punctuation`); number words zero..ten (and 'none') -> digits;
  articles a/an/the dropped; contractions restored ("dont" -> "don't").
* `vqa_soft_accuracy`: m4c `TextVQAAccuracyEvaluator` = official VQA accuracy: prediction and every human answer
  normalised, then the mean over the n leave-one-out subsets (10 choose 9 for 10 answers) of
  min(1, #matches in the subset / 3).  Human answers are normalised with the full processor, as m4c does (the
  original VQAv2 `vqaEval.py` only strips their punctuation, and only when they disagree).
* `anls`: DocVQA/ST-VQA ANLS as in the official RRC script, lmms-eval and the fork's `general_vqa_dataset.py`:
  per gold answer NL = Levenshtein(norm(gold), norm(pred)) / max(len(gold), len(pred)), norm = strip + lower +
  collapse whitespace, the lengths taken on the RAW strings (a quirk of the reference code, kept);
  score = 1 - min NL over the gold answers, set to 0 when below the threshold 0.5 (exactly 0.5 is kept).
* `relaxed_correctness`: ChartQA (pix2struct / google-research `relaxed_correctness`): if both parse as floats
  ("12", "3.5", "45%" -> 0.45) and the gold is non-zero, |pred - gold| / |gold| <= 0.05; otherwise
  case-insensitive exact string match.  Max over gold answers when there are several.
* `exact_match`: OCRVQA (fork/xtuner `general_vqa_dataset.py`): 1 if some gold answer equals the prediction
  after strip + lower, else 0.
* `gqa_normalize` / `gqa_match`: LLaVA `scripts/convert_gqa_for_eval.py` (`text.rstrip('.').lower()`, after the
  strip LLaVA's generation loop applies) then the official GQA `eval.py` test `predicted == gold`.
"""
from .answer_extraction import COMMA_STRIP_M4C, process_punctuation

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
NUMBER_MAP = {'none': '0', 'zero': '0', 'one': '1', 'two': '2', 'three': '3', 'four': '4', 'five': '5',
              'six': '6', 'seven': '7', 'eight': '8', 'nine': '9', 'ten': '10'}
ARTICLES = ('a', 'an', 'the')


def process_digit_article(text):
    words = [NUMBER_MAP.get(w, w) for w in text.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return ' '.join(words)


def normalize_answer(answer):
    """m4c EvalAIAnswerProcessor.__call__ (see module docstring)."""
    text = str(answer).lower().replace(',', '').replace('?', '').replace("'s", " 's").strip()
    text = text.replace('\n', ' ').replace('\t', ' ').strip()
    text = process_punctuation(text, COMMA_STRIP_M4C)
    return process_digit_article(text)


class EvalAIAnswerProcessor:
    """Callable alias of `normalize_answer`, named like the reference class."""

    def __call__(self, answer):
        return normalize_answer(answer)


def vqa_soft_accuracy(prediction, gt_answers):
    """Mean over leave-one-out subsets of min(1, #subset answers equal to the prediction / 3), after
    normalisation. 10 answers -> the official 10-choose-9 average; 0.0 when there are no answers."""
    gts = [normalize_answer(a) for a in gt_answers]
    if not gts:
        return 0.0
    pred = normalize_answer(prediction)
    total = sum(g == pred for g in gts)
    # Leaving out answer i removes one match exactly when answer i itself equals the prediction.
    accs = [min(1.0, float(total - (g == pred)) / 3) for g in gts]
    return sum(accs) / len(accs)


def levenshtein(s1, s2):
    if len(s1) > len(s2):
        s1, s2 = s2, s1
    prev = list(range(len(s1) + 1))
    for i2, c2 in enumerate(s2):
        cur = [i2 + 1]
        for i1, c1 in enumerate(s1):
            cur.append(prev[i1] if c1 == c2 else 1 + min(prev[i1], prev[i1 + 1], cur[-1]))
        prev = cur
    return prev[-1]


def normalized_levenshtein(gold, prediction):
    """Reference `anls_compute`: distance of the normalised strings over the longer RAW length."""
    g = ' '.join(str(gold).strip().lower().split())
    p = ' '.join(str(prediction).strip().lower().split())
    length = max(len(str(gold).upper()), len(str(prediction).upper()))
    return 0.0 if length == 0 else float(levenshtein(g, p)) / float(length)


def anls(prediction, gold_answers, threshold=0.5):
    """1 - min normalised Levenshtein distance over the gold answers; 0 when that is below `threshold`."""
    if isinstance(gold_answers, str):
        gold_answers = [gold_answers]
    if not gold_answers:
        return 0.0
    score = 1.0 - min(normalized_levenshtein(g, prediction) for g in gold_answers)
    return 0.0 if score < threshold else score


def _to_float(text):
    try:
        if text.endswith('%'):
            return float(text.rstrip('%')) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_correctness(prediction, target, max_relative_change=0.05):
    """ChartQA relaxed accuracy for one gold `target` (see module docstring); the prediction is stripped."""
    prediction, target = str(prediction).strip(), str(target)
    pred_f, target_f = _to_float(prediction), _to_float(target)
    if pred_f is not None and target_f:  # a zero gold falls through to string equality, as the reference
        return abs(pred_f - target_f) / abs(target_f) <= max_relative_change
    return prediction.lower() == target.lower()


def relaxed_accuracy(prediction, targets, max_relative_change=0.05):
    if isinstance(targets, str):
        targets = [targets]
    return float(any(relaxed_correctness(prediction, t, max_relative_change) for t in targets))


def exact_match(prediction, gold_answers):
    """OCRVQA: max over the gold answers of (gold.strip().lower() == prediction.strip().lower())."""
    if isinstance(gold_answers, str):
        gold_answers = [gold_answers]
    pred = str(prediction).strip().lower()
    return float(any(str(g).strip().lower() == pred for g in gold_answers))


def gqa_normalize(prediction):
    return str(prediction).strip().rstrip('.').lower()


def gqa_match(prediction, gold):
    return float(gqa_normalize(prediction) == gold)
