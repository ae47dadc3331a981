"""Data: COCO files read as training reads them, masks and RLE, images, augmentation, the
training sampler, and the synthetic datasets the toolkit generates."""
