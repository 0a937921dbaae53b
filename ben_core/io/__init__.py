"""Pixels in and files out: input coercion, image files, batches on a device, atomic files, image and video
writers, video reading."""
