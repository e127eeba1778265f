return (q - outZeroPoint) * outScale
