"""Training: the official ProGAN recipe (schedule, WGAN-GP, EMA, Adam resets), mixed precision,
torchrun data parallelism, atomic checkpoints with exact resume, live feedback, generation.

One job per file; ``import fastprogan.training`` stays light (torch loads with the submodules)::

    config.py       TrainingConfig, presets applied, overrides, validation
    presets.py      the official v1 / v2 (1, 2, 4, 8 GPU) presets and quickstart
    schedule.py     schedule_at(config, nimg, num_gpus) -> TrainingPhase (lod, resolution, batch, lr)
    losses.py       WGAN-GP (resolution-native penalty), LSGAN, G losses
    ema.py          G_ema update
    precision.py    fp32 / bf16 / fp16 policy (autocast, GradScaler, pixel-norm eps, TF32)
    distributed.py  torchrun process group, flat gradient all-reduce, rank-0 gathers
    checkpoint.py   atomic .pt checkpoints, weights_only loading, load_generator
    steps.py        one D step (with penalty) and one G step
    batch_size.py   --batch auto probe
    feedback.py     log lines, log.txt, stats.jsonl, TensorBoard, progress bar
    images.py       seeds -> latents, image grids, PNGs
    latents.py      interpolation paths, the official smoothed latent random walk
    official.py     official release pickles -> checkpoints; ``fastprogan import-official``
    video.py        ``fastprogan video`` (MP4 via imageio-ffmpeg, GIF fallback)
    loop.py         Trainer: the training loop
    cli.py          ``fastprogan train``;  generate_cli.py: ``fastprogan generate``
"""
