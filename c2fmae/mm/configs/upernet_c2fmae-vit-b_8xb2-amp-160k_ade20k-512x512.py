# UperNet with a C2FMAE ViT-B backbone on ADE20K, 512x512 crops, 160k iterations: the MAE / BEiT recipe
# (mmsegmentation configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py): global attention, block
# outputs 3/5/7/11 -> Feature2Pyramid (x4, x2, x1, x0.5) -> UPerHead + FCN auxiliary head, AdamW lr 1e-4
# wd 0.05, layer-wise lr decay 0.65, linear warm-up 1500 iterations then poly, AMP.
#
# GPUs / batch: 8 GPUs x 2 images = batch 16 (the lr is for 16).
#   CFG=$(python -c "import c2fmae.mm as m; print(m.config_path('upernet_c2fmae-vit-b_8xb2-amp-160k_ade20k-512x512'))")
#   bash tools/dist_train.sh $CFG 8   # mmsegmentation repo's tools/, or: mim train mmseg $CFG --gpus 8
# Reference (mmseg, MAE ViT-B): 48.13 mIoU single-scale. Not reproduced here (no GPU in development).
_base_ = [
    'mmseg::_base_/models/upernet_mae.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['c2fmae.mm'], allow_failed_imports=False)

pretrained = 'hf-hub:c2fmae/c2fmae_vit_base_patch16_224.in1k_1600e'  # or an export dir / .safetensors
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='C2FMAEViT',
        model_name='c2fmae_vit_base',
        img_size=crop_size,  # pos embed resampled once to the 32x32 grid at load (mmseg's MAE recipe)
        drop_path_rate=0.1,
        window_size=0,  # global attention in every block
        out_indices=(3, 5, 7, 11),
        with_cp=False,
        pretrained=pretrained),
    neck=dict(embed_dim=768, rescales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[768, 768, 768, 768], num_classes=150, channels=768),
    auxiliary_head=dict(in_channels=768, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='C2FMAELayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=12, decay_rate=0.65))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
