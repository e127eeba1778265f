val logit = (q - outZeroPoint) * outScale
    return 1f / (1f + kotlin.math.exp(-logit))  // the sigmoid
