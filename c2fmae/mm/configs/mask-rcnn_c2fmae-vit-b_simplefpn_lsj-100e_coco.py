# Mask R-CNN with a C2FMAE ViT-B backbone on COCO: the ViTDet recipe (Li et al. 2022; MMDetection
# projects/ViTDet `vitdet_mask-rcnn_vit-b-mae_lsj-100e.py`): windowed attention (14) with global blocks
# 2/5/8/11, SimpleFPN, 4conv1fc box head and LN2d, 1024x1024 large-scale jitter, AdamW lr 1e-4 wd 0.1,
# layer-wise lr decay 0.7, AMP, 184375 iterations = 100 epochs at batch 64.
#
# GPUs / batch: 16 GPUs x 4 images = batch 64 (the lr is for 64; with `--auto-scale-lr` mmdet rescales it
# for other totals). GPU memory not measured in development; `model.backbone.with_cp=True` lowers it.
#   CFG=$(python -c "import c2fmae.mm as m; print(m.config_path('mask-rcnn_c2fmae-vit-b_simplefpn_lsj-100e_coco'))")
#   bash tools/dist_train.sh $CFG 16   # mmdetection repo's tools/, or: mim train mmdet $CFG --gpus 16
# Reference (ViTDet, MAE ViT-B): 51.6 box AP / 45.9 mask AP. Not reproduced here (no GPU in development).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::common/lsj-100e_coco-instance.py',
]
custom_imports = dict(imports=['c2fmae.mm'], allow_failed_imports=False)

pretrained = 'hf-hub:c2fmae/c2fmae_vit_base_patch16_224.in1k_1600e'  # or an export dir / .safetensors
norm_cfg = dict(type='LN2d', requires_grad=True)
image_size = (1024, 1024)
batch_augments = [dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]

model = dict(
    data_preprocessor=dict(pad_size_divisor=32, batch_augments=batch_augments),
    backbone=dict(
        _delete_=True,
        type='C2FMAEViT',
        model_name='c2fmae_vit_base',
        img_size=None,  # pos embed kept at the 224 pretraining grid, interpolated at forward (ViTDet)
        drop_path_rate=0.1,
        window_size=14,
        global_indices=(2, 5, 8, 11),
        out_indices=(11, ),
        with_cp=False,
        pretrained=pretrained),
    neck=dict(
        _delete_=True,
        type='SimpleFPN',
        backbone_channel=768,
        in_channels=[192, 384, 768, 768],
        out_channels=256,
        num_outs=5,
        norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

# ViTDet data: large-scale jitter at 1024 (x0.1-2.0 resize, 1024 crop), infinite sampler, test at 1024
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='CocoDataset',
        data_root='data/coco/',
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline))
# Test images are padded to 1024 like the training crops (ViTDet); `Pad` makes that the `img_shape` boxes are
# clipped to. Known mmdet 3.3 limit: on CPU its mask pasting fails on a box lying wholly in the padded area.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    constructor='C2FMAELayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.7, decay_type='layer_wise', num_layers=12),
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.1))

# 100 epochs = 184375 iterations x 64 images / 118k images
max_iters = 184375
interval = 5000
dynamic_intervals = [(max_iters // interval * interval + 1, max_iters)]
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[163889, 177546], gamma=0.1),
]
train_cfg = dict(
    _delete_=True,
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=interval,
    dynamic_intervals=dynamic_intervals)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, save_last=True, interval=interval, max_keep_ckpts=5))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
auto_scale_lr = dict(base_batch_size=64)
