package edgexray;

/**
 * edgexray's preprocessing for Android: from decoded ARGB pixels to the model's uint8 input.
 *
 * <p>It does what edgexray's infer.py does with Pillow and numpy, byte for byte (edgexray's
 * tests compile this file and compare it with infer.py on real films of many sizes):
 * alpha composited on black, grey level by ITU-R 601-2 luma in Pillow's fixed point, the EXIF
 * orientation applied, Pillow's antialiased bilinear resize (width first, then height, 22-bit
 * fixed-point coefficients), histogram equalisation, then quantization with the input tensor's
 * scale and zero point. Plain Java 8, no Android imports, so it runs on any JVM.
 *
 * <pre>
 * int[] argb = new int[w * h];
 * bitmap.getPixels(argb, 0, w, 0, 0, w, h);   // ARGB, not premultiplied
 * byte[] input = EdgexrayPreprocess.modelInput(argb, w, h, exifOrientation,
 *         128, 128, "equalize", inScale, inZeroPoint);
 * </pre>
 */
public final class EdgexrayPreprocess {
    /** Pillow's Resample.c: 32 bits less 8 for the result and 2 for overflow. */
    private static final int PRECISION_BITS = 32 - 8 - 2;

    private EdgexrayPreprocess() {}

    /** A grey image: width * height bytes (0..255), row by row. */
    public static final class Gray {
        public final int width;
        public final int height;
        public final byte[] pixels;

        public Gray(int width, int height, byte[] pixels) {
            if (width < 1 || height < 1 || pixels.length != width * height) {
                throw new IllegalArgumentException(
                        "need width * height pixels, got " + pixels.length + " for " + width
                                + "x" + height);
            }
            this.width = width;
            this.height = height;
            this.pixels = pixels;
        }
    }

    /**
     * The whole path: ARGB pixels as Bitmap.getPixels gives them, to the bytes of the
     * [1, outHeight, outWidth, 1] uint8 input tensor.
     *
     * @param orientation the EXIF orientation tag (1 to 8; 0 or anything else means upright)
     * @param normalization the sidecar's input.normalization: "equalize" or "scale"
     * @param inScale the input tensor's quantization scale
     * @param inZeroPoint the input tensor's quantization zero point
     */
    public static byte[] modelInput(int[] argb, int width, int height, int orientation,
            int outHeight, int outWidth, String normalization, float inScale, int inZeroPoint) {
        Gray gray = orient(grayscale(argb, width, height), orientation);
        byte[] resized = resize(gray, outHeight, outWidth).pixels;
        if ("equalize".equals(normalization)) {
            resized = equalize(resized);
        } else if (!"scale".equals(normalization)) {
            throw new IllegalArgumentException("unknown normalization " + normalization);
        }
        return quantize(resized, inScale, inZeroPoint);
    }

    /**
     * Grey levels of ARGB pixels. A pixel that is not opaque is first composited on opaque
     * black as Pillow's alpha_composite does (7-bit fixed point), as infer.py does for images
     * with transparency; then L = (19595 R + 38470 G + 7471 B + 32768) >> 16 (Pillow's "L").
     */
    public static Gray grayscale(int[] argb, int width, int height) {
        if (argb.length != width * height) {
            throw new IllegalArgumentException("need width * height pixels");
        }
        byte[] out = new byte[argb.length];
        for (int i = 0; i < argb.length; i++) {
            int pixel = argb[i];
            int alpha = pixel >>> 24;
            int r = (pixel >> 16) & 0xFF;
            int g = (pixel >> 8) & 0xFF;
            int b = pixel & 0xFF;
            if (alpha != 255) {
                r = overBlack(r, alpha);
                g = overBlack(g, alpha);
                b = overBlack(b, alpha);
            }
            out[i] = (byte) ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
        }
        return new Gray(width, height, out);
    }

    /** Pillow's AlphaComposite.c for a source channel over an opaque black destination. */
    private static int overBlack(int channel, int alpha) {
        if (alpha == 0) {
            return 0;
        }
        long blend = 255L * (255 - alpha);  // destination alpha 255
        long outAlpha255 = alpha * 255L + blend;
        long coef1 = alpha * 255L * 255L * (1 << 7) / outAlpha255;
        long tmp = channel * coef1 + (0x80 << 7);  // the destination channel is 0
        return (int) ((((tmp >> 8) + tmp) >> 8) >> 7);
    }

    /** Turn the image upright as its EXIF orientation says (Pillow's exif_transpose). */
    public static Gray orient(Gray image, int orientation) {
        if (orientation < 2 || orientation > 8) {
            return image;
        }
        boolean swap = orientation >= 5;  // 5 to 8 turn by a quarter: width and height swap
        int outW = swap ? image.height : image.width;
        int outH = swap ? image.width : image.height;
        int w = image.width;
        int h = image.height;
        byte[] out = new byte[image.pixels.length];
        for (int y = 0; y < outH; y++) {
            for (int x = 0; x < outW; x++) {
                int sx;
                int sy;
                switch (orientation) {
                    case 2: sx = w - 1 - x; sy = y; break;                  // mirror left-right
                    case 3: sx = w - 1 - x; sy = h - 1 - y; break;          // rotate 180
                    case 4: sx = x; sy = h - 1 - y; break;                  // mirror top-bottom
                    case 5: sx = y; sy = x; break;                          // transpose
                    case 6: sx = y; sy = h - 1 - x; break;                  // rotate 90 clockwise
                    case 7: sx = w - 1 - y; sy = h - 1 - x; break;          // transverse
                    default: sx = w - 1 - y; sy = x; break;                 // 8: 90 counter-clockwise
                }
                out[y * outW + x] = image.pixels[sy * w + sx];
            }
        }
        return new Gray(outW, outH, out);
    }

    /**
     * Resize to outHeight x outWidth, ignoring the aspect ratio: Pillow's bilinear filter
     * (antialiased when shrinking) on every row, rounded to bytes, then on every column.
     * A pass whose size does not change is skipped, as Pillow skips it.
     */
    public static Gray resize(Gray image, int outHeight, int outWidth) {
        Gray out = image;
        if (out.width != outWidth) {
            out = resample(out, outWidth, true);
        }
        if (out.height != outHeight) {
            out = resample(out, outHeight, false);
        }
        return out;
    }

    /** One pass of Pillow's ImagingResampleHorizontal/Vertical_8bpc. */
    private static Gray resample(Gray in, int outSize, boolean alongRows) {
        int inSize = alongRows ? in.width : in.height;
        int lines = alongRows ? in.height : in.width;
        int outW = alongRows ? outSize : in.width;
        int outH = alongRows ? in.height : outSize;
        // Step between neighbours along the resampled axis, and between lines.
        int step = alongRows ? 1 : in.width;
        int lineStep = alongRows ? in.width : 1;
        int outStep = alongRows ? 1 : outW;
        int outLineStep = alongRows ? outW : 1;

        Coefficients c = new Coefficients(inSize, outSize);
        byte[] src = in.pixels;
        byte[] out = new byte[outW * outH];
        for (int line = 0; line < lines; line++) {
            int base = line * lineStep;
            for (int o = 0; o < outSize; o++) {
                int first = c.first[o];
                int count = c.count[o];
                int k = o * c.ksize;
                int sum = 1 << (PRECISION_BITS - 1);
                for (int i = 0; i < count; i++) {
                    sum += (src[base + (first + i) * step] & 0xFF) * c.weights[k + i];
                }
                out[line * outLineStep + o * outStep] = (byte) clip8(sum);
            }
        }
        return new Gray(outW, outH, out);
    }

    private static int clip8(int sum) {
        int value = sum >> PRECISION_BITS;
        return value < 0 ? 0 : Math.min(value, 255);
    }

    /** Pillow's precompute_coeffs and normalize_coeffs_8bpc for the bilinear filter. */
    private static final class Coefficients {
        final int ksize;
        final int[] first;
        final int[] count;
        final int[] weights;

        Coefficients(int inSize, int outSize) {
            double scale = (double) inSize / outSize;
            double filterScale = Math.max(scale, 1.0);
            double support = 1.0 * filterScale;  // the bilinear filter's support is 1
            ksize = (int) Math.ceil(support) * 2 + 1;
            first = new int[outSize];
            count = new int[outSize];
            weights = new int[outSize * ksize];
            double[] w = new double[ksize];
            double ss = 1.0 / filterScale;
            for (int o = 0; o < outSize; o++) {
                double center = (o + 0.5) * scale;
                int min = (int) (center - support + 0.5);  // truncates, as C's (int) does
                if (min < 0) {
                    min = 0;
                }
                int max = (int) (center + support + 0.5);
                if (max > inSize) {
                    max = inSize;
                }
                max -= min;
                double total = 0.0;
                for (int i = 0; i < max; i++) {
                    w[i] = bilinear((i + min - center + 0.5) * ss);
                    total += w[i];
                }
                for (int i = 0; i < max; i++) {
                    if (total != 0.0) {
                        w[i] /= total;
                    }
                    // Bilinear weights are never negative: Pillow's positive rounding branch.
                    weights[o * ksize + i] = (int) (0.5 + w[i] * (1 << PRECISION_BITS));
                }
                first[o] = min;
                count[o] = max;
            }
        }

        private static double bilinear(double x) {
            if (x < 0.0) {
                x = -x;
            }
            return x < 1.0 ? 1.0 - x : 0.0;
        }
    }

    /**
     * Global histogram equalisation, as infer.equalize does with numpy: lut[v] =
     * rint((cdf[v] - cdfMin) * (255.0 / (n - cdfMin))) clamped to 0..255, halves to even;
     * a flat image becomes all 0.
     */
    public static byte[] equalize(byte[] pixels) {
        long[] cdf = new long[256];
        for (byte p : pixels) {
            cdf[p & 0xFF]++;
        }
        int darkest = 0;
        while (cdf[darkest] == 0) {
            darkest++;
        }
        for (int v = 1; v < 256; v++) {
            cdf[v] += cdf[v - 1];
        }
        long cdfMin = cdf[darkest];
        long n = cdf[255];
        byte[] out = new byte[pixels.length];
        if (n == cdfMin) {
            return out;
        }
        double factor = 255.0 / (n - cdfMin);
        byte[] lut = new byte[256];
        for (int v = 0; v < 256; v++) {
            double level = Math.rint((cdf[v] - cdfMin) * factor);
            lut[v] = (byte) Math.max(0.0, Math.min(255.0, level));
        }
        for (int i = 0; i < pixels.length; i++) {
            out[i] = lut[pixels[i] & 0xFF];
        }
        return out;
    }

    /**
     * The uint8 input tensor's bytes: q = rint((v / 255f) / scale + zeroPoint) in float,
     * clamped to 0..255 (infer.input_batch). For scale 1/255 and zero point 0, q == v.
     */
    public static byte[] quantize(byte[] levels, float scale, int zeroPoint) {
        byte[] out = new byte[levels.length];
        for (int i = 0; i < levels.length; i++) {
            float x = (levels[i] & 0xFF) / 255f;
            float q = x / scale + zeroPoint;
            out[i] = (byte) Math.max(0.0, Math.min(255.0, Math.rint(q)));
        }
        return out;
    }
}
