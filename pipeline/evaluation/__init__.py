"""Evaluation: a confusion matrix over the whole split, mIoU protocols, plots and qualitative panels."""
