"""What happens after the network: confidence trimap, refinement, foreground colours, compositing, the video
stabiliser."""
