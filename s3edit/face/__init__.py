"""Face stack: detection and landmarks, tracking, FFHQ alignment, masks, paste-back, identity."""
