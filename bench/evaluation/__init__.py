"""Evaluation: metrics as pure functions of a confusion matrix (mmseg's definitions and names)
and the inference protocols the papers evaluate with (whole image, sliding window, flips,
multi-scale, resize back).

Contract: no I/O and no state beyond a meter's running sums; imports only ``data`` (ignore
index, class names) and torch.
"""
