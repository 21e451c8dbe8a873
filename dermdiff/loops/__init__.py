"""Reusable training loops: shared plumbing (`common`) and the diffusion loop (`diffusion`).

The scripts in `training/` are thin command-line faces of these functions, and the hard-case loop calls
them directly (e.g. to fine-tune the diffusion model on mined cases). The ported GANs train through
`gan.train_gan` with the tasks of `gan_tasks` (DermGAN, DCGAN, lesion editing); `gan_cli` holds their flags.
"""
