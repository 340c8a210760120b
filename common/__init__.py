"""What training and stylisation share: errors, the command lines' plumbing, devices,
precision, files, images, checkpoint files and frame extraction. It imports no module of the
project but config, so every other module can import it."""
