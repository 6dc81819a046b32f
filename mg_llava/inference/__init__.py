"""The one inference engine of mg_llava: evaluation (`mg_llava.evaluation.loop`), chat, the demo and the box
detector all go through it.

  prompt.py      text (one turn, or a chat conversation) -> input_ids exactly as training tokenises them;
                 question + image + boxes -> a prompt sample (the training preprocessing); left-padded batches.
  generation.py  a left-padded batch -> greedy answers (stop words, decode); chat's streaming goes through it.
  chat.py        ChatSession: multi-turn chat about one image (the CLI is tools/chat.py).
  writer.py      the resumable, per-rank sharded JSON-lines output (predictions, box files). Stdlib only.
  sharding.py    rank / world size, the round-robin shard, gather and barrier.

Nothing is imported here, so that `writer` and `sharding` load without torch/transformers. Layering: this
package uses mg_llava.data, mg_llava.models (through a model object) and mg_llava.errors; mg_llava.evaluation
and mg_llava.detection use it; mg_llava.data and mg_llava.models never import it.
"""
