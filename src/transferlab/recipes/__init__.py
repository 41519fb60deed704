"""Recipes: data + task + the one loop + evaluation, one function each — what the commands run.

``pretrain`` (self-supervised or supervised pretraining), ``finetune`` (a new head on a checkpoint),
``seq2seq`` (fine-tuning an encoder-decoder on text pairs, and generation). They sit above ``evaluation`` and
``transfer``, and nothing below imports them.
"""
