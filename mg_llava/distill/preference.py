"""LLaVA-MoD preference distillation: DPO / KTO-pair / hinge / IPO with the frozen teacher as the reference model.

    [chosen; rejected] batch (2B rows, mg_llava.data.preference) ─ student.forward_hidden ─ sequence log-probs
                                                                 └ teacher (no_grad) ─ reference log-probs
    -> losses.preference_loss(chosen, rejected, ref chosen, ref rejected) + the student's router loss, ONCE: one
       policy pass covers both answers (the reference added the aux term of two passes).
Logged: rewards_chosen, rewards_rejected, margins, accuracy (mmengine logs every entry of the loss dict).
"""
import torch

from mg_llava.models import losses

from .mimic import TeacherStudentLLaVAModel

PREFERENCE_LOSSES = ('sigmoid', 'kto_pair', 'hinge', 'ipo')


class PreferenceDistillLLaVAModel(TeacherStudentLLaVAModel):
    """loss_type: 'sigmoid' (DPO), 'kto_pair' (default, as the LLaVA-MoD recipe), 'hinge', 'ipo'; beta: the
    preference temperature (0.1); kto_kl: 'batch_detached' (default) or 'reference' (the reference's per-device,
    non-detached KL estimate)."""

    def __init__(self, student, teacher, pretrained_pth=None, loss_type='kto_pair', beta=0.1,
                 kto_kl='batch_detached', moe_loss_enable=True, chunk_size=1024, teacher_dtype='bfloat16', llm=None):
        if loss_type not in PREFERENCE_LOSSES:
            raise ValueError(f'loss_type must be one of {PREFERENCE_LOSSES}, got {loss_type!r}')
        super().__init__(student, teacher, pretrained_pth, teacher_dtype, llm)
        self.loss_type, self.beta, self.kto_kl = loss_type, beta, kto_kl
        self.moe_loss_enable, self.chunk_size = moe_loss_enable, chunk_size

    def forward(self, data, data_samples=None, mode='loss'):
        if mode == 'loss':
            return self.compute_loss(data)
        raise ValueError(f"mode must be 'loss', got {mode!r}: a preference batch has no single output")

    def compute_loss(self, data):
        """data: preference_collate_fn's batch (2B rows, `num_pairs` = B)."""
        b = data['num_pairs']
        cache = {} if self.share_towers else None
        hidden_s, aux = self.student.forward_hidden(data, tower_cache=cache)
        policy = losses.sequence_logps(hidden_s, self.student.llm.get_output_embeddings(), data['labels'],
                                       chunk_size=self.chunk_size)
        teacher = self.teacher_on(hidden_s.device)
        with torch.no_grad():
            hidden_t, _ = teacher.forward_hidden(data, tower_cache=cache)
            ref = losses.sequence_logps(hidden_t, teacher.llm.get_output_embeddings(), data['labels'],
                                        chunk_size=self.chunk_size)
        loss, metrics = losses.preference_loss(policy[:b], policy[b:], ref[:b], ref[b:], kind=self.loss_type,
                                               beta=self.beta, kto_kl=self.kto_kl)
        out = {'loss': loss, **metrics}
        if self.moe_loss_enable:
            out.update(aux)
        return out
