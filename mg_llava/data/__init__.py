from .collate import mg_llava_collate_fn
from .dataset import MGLLaVADataset, expand_visual_slots, load_box_index, read_records
from mg_llava.errors import DataError
from .preprocess import VisionSpec, load_image, preprocess_boxes, preprocess_image

__all__ = ['DataError', 'MGLLaVADataset', 'VisionSpec', 'expand_visual_slots', 'load_box_index', 'load_image',
           'mg_llava_collate_fn', 'preprocess_boxes', 'preprocess_image', 'read_records']
