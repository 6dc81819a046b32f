"""Turn free-form model output into a benchmark answer (option letter or yes/no).

Each extractor names the official scorer whose semantics it reproduces; where that scorer has a quirk, the quirk
is kept on purpose (scores must match the reference numbers) and pointed out in a comment.

Option letters (multiple choice)
  `extract_option(prediction, options)` -> letter or None.  Rules, first hit wins:
    1. the whole answer is one letter, optionally wrapped/decorated: "B", "(B)", "B.", "[b]", "**B**", "b";
    2. the answer starts with a letter and a delimiter: "B) cat", "B. cat", "(B) cat", "B: cat", "(b) cat";
    3. an explicit phrase: "The answer is B", "answer: (C)", "Option D"; a lower-case letter only when it ends
       the answer ("the answer is b."), so the article in "the answer is a dog" does not name option A;
    4. exactly one distinct stand-alone capital option letter among the tokens (VLMEvalKit `can_infer_option`),
       ignoring "A"/"I" used as article/pronoun ("A cat", "I think") at this step;
    5. the answer equals one option's text, or contains exactly one option's text as whole words
       (VLMEvalKit `can_infer_text`, made word-bounded);
    6. step 4 again with "A"/"I" counted (so "A is correct." still gives A).
  Anything else (empty, two different letters and no single option text, several option texts) -> None,
  which the scorers count as wrong.
  `extract_option_fork(prediction)` is the MG-LLaVA fork / xtuner rule (first regex match of `[A-D]+`),
  kept for parity runs (spec section 9).

Yes / no
  * `yorn_extraction`: VLMEvalKit `YOrN_Extraction` (used by the fork for MME/HallusionBench/POPE):
    lower-case, EvalAI punctuation strip, then 'yes' as a word and no 'no' -> 'yes'; 'no' and no 'yes' -> 'no';
    otherwise None ("Yes." -> yes, "yes, there is" -> yes, "No, there is not" -> no, "yes and no" -> None).
  * `pope_yes_no`: LLaVA `llava/eval/eval_pope.py`: keep the text before the first '.', drop commas, split on
    single spaces; 'No', 'no' or 'not' among the words -> 'no', anything else (including "" and "Not sure") ->
    'yes'.  The answer is stripped first, as LLaVA's generation loop strips its outputs.
  * `mme_yes_no`: MME `eval_tool/calculation.py` `parse_pred_ans` on the stripped, lower-cased answer: exactly
    'yes'/'no', else 'yes' inside the first 4 characters -> 'yes', else 'no' there -> 'no' (so "not sure" and
    "none" are 'no'), else 'other'.
"""
import re

# ---------------------------------------------------------------------------------------------------------------
# EvalAI punctuation handling (mmf/pythia EvalAIAnswerProcessor, copied by LLaVA m4c_evaluator and VLMEvalKit).
PUNCTUATIONS = [';', r'/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
                '?', '!']
# The official regex is `(?!<=\d)` (a typo for the look-behind `(?<!\d)`): it only checks that the '.' is not
# followed by a digit, so "2.5" keeps its period but "the end." and "e.g." lose theirs. Reproduced verbatim.
PERIOD_STRIP = re.compile(r'(?!<=\d)(\.)(?!\d)')
COMMA_STRIP_M4C = re.compile(r'(?<=\d)(\,)+(?=\d)')  # m4c_evaluator
COMMA_STRIP_VLMEVAL = re.compile(r'(\d)(,)(\d)')     # VLMEvalKit process_punctuation


def process_punctuation(text, comma_strip=COMMA_STRIP_M4C):
    """EvalAI punctuation step: a mark touching a space (or any text with a digit,digit comma) is deleted,
    otherwise replaced by a space; then periods not followed by a digit are deleted."""
    out = text
    has_num_comma = re.search(comma_strip, text) is not None
    for p in PUNCTUATIONS:
        if (p + ' ' in text or ' ' + p in text) or has_num_comma:
            out = out.replace(p, '')
        else:
            out = out.replace(p, ' ')
    # The official call is `PERIOD_STRIP.sub("", out, re.UNICODE)`: the flag lands in `count`, so at most
    # re.UNICODE == 32 periods are removed. Kept for exact parity.
    return PERIOD_STRIP.sub('', out, count=32)


# ---------------------------------------------------------------------------------------------------------------
# Yes / no
def yorn_extraction(prediction):
    """VLMEvalKit YOrN_Extraction -> 'yes' | 'no' | None (the official returns 'Yes'/'No'/'Unknown')."""
    words = process_punctuation(str(prediction).lower(), COMMA_STRIP_VLMEVAL).split()
    if 'yes' in words and 'no' not in words:
        return 'yes'
    if 'yes' not in words and 'no' in words:
        return 'no'
    return None


def pope_yes_no(prediction):
    """LLaVA eval_pope.py answer rule -> 'yes' | 'no' (never undecided: anything without a no-word is 'yes')."""
    text = str(prediction).strip()
    if text.find('.') != -1:  # only the first sentence counts
        text = text.split('.')[0]
    words = text.replace(',', '').split(' ')  # single spaces, as the official: "No\nthere" is one word
    return 'no' if ('No' in words or 'not' in words or 'no' in words) else 'yes'


def mme_yes_no(prediction):
    """MME calculation.py parse_pred_ans on the lower-cased answer -> 'yes' | 'no' | 'other'."""
    text = str(prediction).strip().lower()
    if text in ('yes', 'no'):
        return text
    prefix = text[:4]
    if 'yes' in prefix:
        return 'yes'
    if 'no' in prefix:
        return 'no'
    return 'other'


# ---------------------------------------------------------------------------------------------------------------
# Option letters
_WRAP = r'[\s\*\(\[\{<"\'`]*'
_TAIL = r'[\s\*\)\]\}>"\'`\.,:;!]*'
_BARE_LETTER = re.compile(rf'{_WRAP}([A-Za-z]){_TAIL}')
_LEADING = re.compile(r'\s*\**\s*(?:\(([A-Za-z])\)|([A-Z])[\)\.:]|([a-z])\))\**(?:\s+|$)')
# Only the key words are case-insensitive: the captured letter's case decides how strict we are.
_PHRASE = re.compile(
    r'\b(?i:answer|option|choice)\b(?:\s+(?i:is|would\s+be|should\s+be))?\s*[:\uff1a]?\s*(?:(?i:option)\s+)?'
    r'\**[\(\[]?(?:([A-Z])(?![A-Za-z])|([a-z]))[\)\]]?\**')
# VLMEvalKit can_infer_option replaces '.()[],:;!*#{}' by spaces and splits: what remains are its tokens.
_TOKEN = re.compile(r'[^\s.()\[\],:;!*#{}]+')


def _norm_text(s):
    return ' '.join(re.sub(r'[^\w\s]', ' ', str(s).lower()).split())


def _standalone_letters(text, letters, skip_article):
    found = []
    for m in _TOKEN.finditer(text):
        ch = m.group(0)
        if ch not in letters or ch in found:
            continue
        # "A cat", "I think": an article / pronoun followed by a lower-case word is not an answer letter.
        if skip_article and ch in 'AI' and re.match(r' [a-z]', text[m.end():m.end() + 2]):
            continue
        found.append(ch)
    return found


def extract_option(prediction, options):
    """Option letter in `options` (dict letter -> option text, upper-case keys) chosen by `prediction`, or None.

    See the module docstring for the rules (VLMEvalKit `can_infer` plus leading-letter / "answer is X" forms)."""
    if prediction is None:
        return None
    text = str(prediction).strip()
    letters = {str(k).upper() for k in options}
    if not text or not letters:
        return None

    m = _BARE_LETTER.fullmatch(text)  # 1. the whole answer is a letter
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()

    m = _LEADING.match(text)  # 2. "B) cat", "(b) cat", "B. cat", "B: cat"
    if m:
        ch = (m.group(1) or m.group(2) or m.group(3)).upper()
        if ch in letters:
            return ch

    for m in _PHRASE.finditer(text):  # 3. "The answer is B"
        if m.group(1) and m.group(1) in letters:
            return m.group(1)
        if m.group(2) and m.group(2).upper() in letters and re.fullmatch(_TAIL, text[m.end():]):
            return m.group(2).upper()

    found = _standalone_letters(text, letters, skip_article=True)  # 4. one stand-alone capital letter
    if len(found) == 1:
        return found[0]

    norm_pred = _norm_text(text)  # 5. option text
    norm_opts = {k.upper(): _norm_text(v) for k, v in options.items() if _norm_text(v)}
    equal = [k for k, v in norm_opts.items() if v == norm_pred]
    if len(equal) == 1:
        return equal[0]
    contained = [k for k, v in norm_opts.items() if re.search(rf'(?<!\w){re.escape(v)}(?!\w)', norm_pred)]
    if len(contained) == 1:
        return contained[0]
    if contained:
        return None

    found = _standalone_letters(text, letters, skip_article=False)  # 6. "A is correct."
    return found[0] if len(found) == 1 else None


_FORK_RE = re.compile(r'([A-D]+)')


def extract_option_fork(prediction, options=None):
    """MG-LLaVA fork / xtuner MultipleChoiceDataset: first match of `([A-D]+)` anywhere, None when none.

    Known weaknesses (spec section 8 item 8): E+ never match, "Based on..." yields 'B', "AB" is one answer."""
    m = _FORK_RE.search(str(prediction))
    return m.group(1) if m else None


OPTION_EXTRACTORS = {'robust': extract_option, 'fork': extract_option_fork}
