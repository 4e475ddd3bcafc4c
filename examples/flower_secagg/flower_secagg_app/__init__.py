"""A Flower app running one round of the toolkit's SecAgg+ (secagg.flower)."""
