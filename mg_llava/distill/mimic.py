"""LLaVA-MoD mimic distillation: a trained student imitates a frozen teacher's next-token distributions.

    batch ─ student.forward_hidden ─ hidden_S ─┬─ kd_loss at the selected positions (chunked, fp32) ─ loss_kd
           └ teacher.forward_hidden (no_grad) ─ hidden_T ┘
                                               └─ (kd_lm) LM head at supervised positions ─ CE ─ loss_lm
    + the student's MoE router loss, once (the reference added it twice with kd_lm, spec §5.4)

Positions: response tokens by default, shifted like the LM loss (position t is distilled when label t+1 is
supervised — the reference masks with unshifted labels, an off-by-one), or every non-padding position with
`distill_all_tokens` (the reference also distilled padding). Both models see the student's preprocessing;
`check_compatible` refuses teachers whose vocabulary or visual-token layout differ. When both run the same frozen
towers, the tower features are computed once.

The class name contains "LLaVAModel" on purpose: `xtuner convert pth_to_hf` then clears `pretrained_pth` and the
export is the student's (`to_hf`).
"""
import torch
from mmengine.model import BaseModel

from mg_llava.models import MGLLaVAModel, losses

from .teacher import check_compatible, load_teacher, shares_towers

LOSS_TYPES = ('only_kd', 'kd_lm')


def build_student(student, pretrained_pth=None):
    """The student: an MGLLaVAModel or its config dict (MGLLaVAConfig fields + TrainingPolicy options)."""
    if isinstance(student, MGLLaVAModel):
        if pretrained_pth is not None:
            student.load_pretrained(pretrained_pth)
        return student
    kwargs = {k: v for k, v in dict(student).items() if k != 'type'}
    if pretrained_pth is not None:
        kwargs['pretrained_pth'] = pretrained_pth
    return MGLLaVAModel(**kwargs)


class TeacherStudentLLaVAModel(BaseModel):
    """What every distillation stage shares: the student (the only trained, saved and exported part) and a frozen
    teacher kept outside the module tree. pretrained_pth: the previous stage's checkpoint for the student."""

    def __init__(self, student, teacher, pretrained_pth=None, teacher_dtype='bfloat16', llm=None):
        # llm: unused. `xtuner convert pth_to_hf` reads `cfg.model.llm` (for a QLoRA check) before building the
        # model, so a distillation config carries `llm=None`; the student's LLM is `student['llm']`.
        super().__init__()
        self.student = build_student(student, pretrained_pth)
        self._teacher = load_teacher(teacher, teacher_dtype)
        self.vocab_size = check_compatible(self._teacher.model, self.student)
        self.share_towers = shares_towers(self._teacher.model, self.student)

    @property
    def teacher(self):
        return self._teacher.model

    @property
    def llm(self):   # read by `xtuner convert pth_to_hf`
        return self.student.llm

    def teacher_on(self, device):
        return self._teacher.on(device)

    def init_weights(self):
        """Weights come from the student's sources and checkpoints; mmengine must not re-initialise them."""

    def to_hf(self, *args, **kwargs):
        """The export of a distillation run is its student."""
        return self.student.to_hf(*args, **kwargs)

    def save_pretrained(self, *args, **kwargs):
        return self.student.save_pretrained(*args, **kwargs)


class MimicDistillLLaVAModel(TeacherStudentLLaVAModel):
    """loss_type: 'only_kd' or 'kd_lm' (KD + next-token CE, 1:1). kd_kind: 'forward_kl' (default),
    'forward_kl_ce' (the reference's cross-entropy form), 'reverse_kl', 'jsd'. moe_loss_enable: add the
    student's router load-balancing loss (MoE students)."""

    def __init__(self, student, teacher, pretrained_pth=None, loss_type='only_kd', kd_kind='forward_kl',
                 temperature=1.0, distill_all_tokens=False, moe_loss_enable=True, kd_chunk_size=1024,
                 teacher_dtype='bfloat16', llm=None):
        if loss_type not in LOSS_TYPES:
            raise ValueError(f'loss_type must be one of {LOSS_TYPES}, got {loss_type!r}')
        super().__init__(student, teacher, pretrained_pth, teacher_dtype, llm)
        self.loss_type, self.kd_kind, self.temperature = loss_type, kd_kind, temperature
        self.distill_all_tokens, self.moe_loss_enable = distill_all_tokens, moe_loss_enable
        self.kd_chunk_size = kd_chunk_size

    def forward(self, data, data_samples=None, mode='loss'):
        if mode == 'loss':
            return self.compute_loss(data)
        if mode == 'tensor':
            return self.student(data, mode='tensor')
        raise ValueError(f"mode must be 'loss' or 'tensor', got {mode!r} (to generate: mg_llava.inference on "
                         'the student)')

    def distill_positions(self, data):
        """(N,) flat positions into hidden[:, :-1] whose next-token distributions are distilled."""
        if self.distill_all_tokens:
            return losses.all_token_positions(data['attention_mask'], data.get('sequence_ids'))
        idx = data.get('supervised_index')
        return idx if idx is not None else losses.response_positions(data['labels'])

    def compute_loss(self, data):
        """{'loss_kd', ['loss_lm'], ['router_loss']}: mmengine sums every '*loss*' entry and logs each."""
        cache = {} if self.share_towers else None
        hidden_s, aux = self.student.forward_hidden(data, tower_cache=cache)
        teacher = self.teacher_on(hidden_s.device)
        with torch.no_grad():
            hidden_t, _ = teacher.forward_hidden(data, tower_cache=cache)
        positions = self.distill_positions(data)
        out = {'loss_kd': losses.kd_loss(
            hidden_s, hidden_t, self.student.llm.get_output_embeddings(), teacher.llm.get_output_embeddings(),
            positions, kind=self.kd_kind, temperature=self.temperature, vocab_size=self.vocab_size,
            chunk_size=self.kd_chunk_size)}
        if self.loss_type == 'kd_lm':
            sup = data['supervised_index'] if data.get('supervised_index') is not None else \
                losses.response_positions(data['labels'])
            out['loss_lm'] = losses.next_token_ce(self.student.lm_logits_at(hidden_s, sup),
                                                  losses.targets_at(data['labels'], sup))
        if self.moe_loss_enable:
            out.update(aux)
        return out
