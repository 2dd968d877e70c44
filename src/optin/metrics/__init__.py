"""Metrics: classification scores (accuracy, balanced accuracy, chance, confusion) and speaker
verification (trials, cosine scoring, EER, minDCF). Pure functions of tensors and labels, used by
training (model selection) and evaluation (attacks, reports) alike."""
