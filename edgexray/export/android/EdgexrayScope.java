package edgexray;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * edgexray's out-of-scope guard for Android: is this image a frontal chest film like the
 * training films, or must it get the label OUT_OF_SCOPE instead of NORMAL or PNEUMONIA?
 *
 * <p>The same checks, in the same order, as edgexray's edge_runtime/scope.py (edgexray's
 * tests compile this file and require the same decision and distance as scope.py on real
 * films, negatives, photographs and blank images): a colour image (many hues: a
 * photograph), a flat or blank image, then the Mahalanobis distance of the model's pooled
 * features (its second output) from the training films', against the cut-off in the
 * sidecar's {@code scope} block. DICOM tags are not checked here: the app decodes images,
 * not DICOM files. Plain Java 8, no Android imports.
 *
 * <pre>
 * EdgexrayScope scope = EdgexrayScope.fromSidecar(sidecarJsonText);  // null: no statistics
 * // after interpreter.runForMultipleInputsOutputs(...), features = output scope.featureIndex
 * EdgexrayScope.Decision d = scope.decide(argb, w, h, resizedGray, featureBytes,
 *         featureScale, featureZeroPoint);
 * String label = d.inScope ? (probability >= threshold ? "PNEUMONIA" : "NORMAL")
 *         : EdgexrayScope.OUT_OF_SCOPE;
 * </pre>
 */
public final class EdgexrayScope {
    public static final String OUT_OF_SCOPE = "OUT_OF_SCOPE";
    public static final String SCHEMA = "edgexray.scope/1";
    /** scope.py's constants: keep them equal (the tests compare the decisions). */
    public static final double FLAT_STD = 10.0;
    public static final int FLAT_LEVELS = 32;
    public static final double COLOUR_LIMIT = 2.5;
    public static final int COLOUR_SAMPLE = 256;

    /** Index and size of the model output that holds the pooled features. */
    public final int featureIndex;
    public final int featureSize;
    public final double cutoff;
    private final double[] mean;
    private final double[][] whitening;

    /** The guard's answer for one image. */
    public static final class Decision {
        public final boolean inScope;
        public final String reason;
        /** The features' Mahalanobis distance, NaN when not measured. */
        public final double distance;

        Decision(boolean inScope, String reason, double distance) {
            this.inScope = inScope;
            this.reason = reason;
            this.distance = distance;
        }
    }

    private EdgexrayScope(Map<String, Object> block) {
        if (!SCHEMA.equals(block.get("schema"))) {
            throw new IllegalArgumentException("scope.schema must be " + SCHEMA);
        }
        Map<String, Object> output = object(block.get("feature_output"), "scope.feature_output");
        featureIndex = (int) number(output.get("index"), "scope.feature_output.index");
        featureSize = (int) number(output.get("size"), "scope.feature_output.size");
        if (featureIndex < 1 || featureSize < 1) {
            throw new IllegalArgumentException("scope.feature_output.index must be >= 1");
        }
        mean = vector(block.get("mean"), featureSize, "scope.mean");
        List<Object> rows = list(block.get("whitening"), "scope.whitening");
        whitening = new double[rows.size()][];
        for (int r = 0; r < rows.size(); r++) {
            whitening[r] = vector(rows.get(r), featureSize, "scope.whitening");
        }
        cutoff = number(block.get("cutoff"), "scope.cutoff");
        if (!(cutoff > 0) || Double.isInfinite(cutoff)) {
            throw new IllegalArgumentException("scope.cutoff must be a positive number");
        }
    }

    /**
     * The guard of a model from its sidecar's JSON text.
     *
     * @return null when the sidecar has no scope block: the model has no scope statistics,
     *     and its answers must be shown as not checked (as infer.py does)
     * @throws IllegalArgumentException a sidecar that is not JSON, or a broken scope block
     */
    public static EdgexrayScope fromSidecar(String sidecarJson) {
        Map<String, Object> sidecar = object(new Json(sidecarJson).value(), "the sidecar");
        Object block = sidecar.get("scope");
        return block == null ? null : new EdgexrayScope(object(block, "scope"));
    }

    /** Mahalanobis distance |W (f - mean)| of dequantized features. */
    public double distance(double[] features) {
        if (features.length != featureSize) {
            throw new IllegalArgumentException("need " + featureSize + " features");
        }
        double sum = 0.0;
        for (double[] row : whitening) {
            double value = 0.0;
            for (int i = 0; i < featureSize; i++) {
                value += row[i] * (features[i] - mean[i]);
            }
            sum += value * value;
        }
        return Math.sqrt(sum);
    }

    /** The int8 features tensor's bytes, dequantized: (q - zeroPoint) * scale. */
    public static double[] dequantize(byte[] raw, float scale, int zeroPoint) {
        double[] out = new double[raw.length];
        for (int i = 0; i < raw.length; i++) {
            out[i] = (raw[i] - zeroPoint) * (double) scale;  // raw is signed, as int8
        }
        return out;
    }

    /**
     * How far an image is from grey or one tint, in grey levels (scope.colour_spread): the
     * mean length of each pixel's chroma (R - G, G - B) across the direction of the summed
     * chroma, on every step-th pixel of every step-th row (step = ceil(longer side / 256)),
     * of the pixels as stored (before the EXIF orientation; alpha ignored).
     */
    public static double colourSpread(int[] argb, int width, int height) {
        int step = Math.max(1, (Math.max(width, height) + COLOUR_SAMPLE - 1) / COLOUR_SAMPLE);
        int count = 0;
        double sumFirst = 0.0;
        double sumSecond = 0.0;
        for (int y = 0; y < height; y += step) {
            for (int x = 0; x < width; x += step) {
                int pixel = argb[y * width + x];
                int r = (pixel >> 16) & 0xFF;
                int g = (pixel >> 8) & 0xFF;
                int b = pixel & 0xFF;
                sumFirst += r - g;
                sumSecond += g - b;
                count++;
            }
        }
        double norm = Math.hypot(sumFirst, sumSecond);
        double across = 0.0;
        for (int y = 0; y < height; y += step) {
            for (int x = 0; x < width; x += step) {
                int pixel = argb[y * width + x];
                double first = ((pixel >> 16) & 0xFF) - ((pixel >> 8) & 0xFF);
                double second = ((pixel >> 8) & 0xFF) - (pixel & 0xFF);
                across += norm == 0.0
                        ? Math.hypot(first, second)
                        : Math.abs(first * (sumSecond / norm) - second * (sumFirst / norm));
            }
        }
        return count == 0 ? 0.0 : across / count;
    }

    /** Why a resized 8-bit image is flat or blank (scope.flat_reason), or null. */
    public static String flatReason(byte[] gray) {
        int[] histogram = new int[256];
        double total = 0.0;
        for (byte p : gray) {
            histogram[p & 0xFF]++;
            total += p & 0xFF;
        }
        double average = total / gray.length;
        double squares = 0.0;
        for (byte p : gray) {
            double d = (p & 0xFF) - average;
            squares += d * d;
        }
        double spread = Math.sqrt(squares / gray.length);
        int levels = 0;
        for (int count : histogram) {
            levels += count > 0 ? 1 : 0;
        }
        if (spread < FLAT_STD || levels < FLAT_LEVELS) {
            return String.format(Locale.ROOT,
                    "flat or blank image (grey-level standard deviation %.1f, %d grey levels)",
                    spread, levels);
        }
        return null;
    }

    /**
     * The decision for one image (scope.decide without DICOM tags).
     *
     * @param argb the decoded pixels, as Bitmap.getPixels gives them
     * @param gray the image resized to the model input, before equalisation
     *     (EdgexrayPreprocess.orient, grayscale and resize)
     * @param features the model's features output for this image, int8 bytes
     */
    public Decision decide(int[] argb, int width, int height, byte[] gray, byte[] features,
            float featureScale, int featureZeroPoint) {
        double measured = distance(dequantize(features, featureScale, featureZeroPoint));
        String reason = cheapReason(argb, width, height, gray);
        if (reason != null) {
            return new Decision(false, reason, measured);
        }
        if (!(measured <= cutoff)) {
            return new Decision(false, String.format(Locale.ROOT,
                    "unlike the training films (feature distance %.1f > cut-off %.1f)",
                    measured, cutoff), measured);
        }
        return new Decision(true, "in scope", measured);
    }

    /** The colour and flat checks, which need no statistics (a model without a scope block
     * still refuses such images). */
    public static String cheapReason(int[] argb, int width, int height, byte[] gray) {
        double colour = colourSpread(argb, width, height);
        if (colour > COLOUR_LIMIT) {
            return String.format(Locale.ROOT,
                    "colour image (colour spread %.1f > %.1f): a photograph, not a film",
                    colour, COLOUR_LIMIT);
        }
        return flatReason(gray);
    }

    // --- reading the sidecar's JSON: just enough of RFC 8259 for a sidecar ---------------

    @SuppressWarnings("unchecked")
    private static Map<String, Object> object(Object value, String what) {
        if (!(value instanceof Map)) {
            throw new IllegalArgumentException(what + " must be a JSON object");
        }
        return (Map<String, Object>) value;
    }

    @SuppressWarnings("unchecked")
    private static List<Object> list(Object value, String what) {
        if (!(value instanceof List)) {
            throw new IllegalArgumentException(what + " must be a JSON array");
        }
        return (List<Object>) value;
    }

    private static double number(Object value, String what) {
        if (!(value instanceof Double) || ((Double) value).isNaN()) {
            throw new IllegalArgumentException(what + " must be a number");
        }
        return (Double) value;
    }

    private static double[] vector(Object value, int size, String what) {
        List<Object> items = list(value, what);
        if (items.size() != size) {
            throw new IllegalArgumentException(what + " must have " + size + " values");
        }
        double[] out = new double[size];
        for (int i = 0; i < size; i++) {
            out[i] = number(items.get(i), what);
            if (Double.isInfinite(out[i])) {
                throw new IllegalArgumentException(what + " must be finite");
            }
        }
        return out;
    }

    /**
     * A small recursive-descent JSON reader: objects, arrays, strings, numbers, literals
     * (EdgexrayModelFile reads the sidecar with it too).
     */
    static final class Json {
        private final String text;
        private int at;

        Json(String text) {
            this.text = text;
        }

        Object value() {
            Object value = next();
            skipSpace();
            if (at != text.length()) {
                throw error("trailing text");
            }
            return value;
        }

        private Object next() {
            skipSpace();
            if (at >= text.length()) {
                throw error("unexpected end");
            }
            char c = text.charAt(at);
            if (c == '{') {
                Map<String, Object> map = new LinkedHashMap<>();
                at++;
                if (peek('}')) {
                    return map;
                }
                do {
                    skipSpace();
                    String key = string();
                    expect(':');
                    map.put(key, next());
                } while (peek(','));
                expect('}');
                return map;
            }
            if (c == '[') {
                List<Object> items = new ArrayList<>();
                at++;
                if (peek(']')) {
                    return items;
                }
                do {
                    items.add(next());
                } while (peek(','));
                expect(']');
                return items;
            }
            if (c == '"') {
                return string();
            }
            for (String literal : new String[] {"true", "false", "null"}) {
                if (text.startsWith(literal, at)) {
                    at += literal.length();
                    return "null".equals(literal) ? null : Boolean.valueOf(literal);
                }
            }
            int start = at;
            while (at < text.length() && "+-0123456789.eE".indexOf(text.charAt(at)) >= 0) {
                at++;
            }
            if (start == at) {
                throw error("unexpected character");
            }
            return Double.parseDouble(text.substring(start, at));
        }

        private String string() {
            if (at >= text.length() || text.charAt(at) != '"') {
                throw error("expected a string");
            }
            StringBuilder out = new StringBuilder();
            at++;
            while (at < text.length()) {
                char c = text.charAt(at++);
                if (c == '"') {
                    return out.toString();
                }
                if (c != '\\') {
                    out.append(c);
                    continue;
                }
                char escaped = text.charAt(at++);
                switch (escaped) {
                    case 'n': out.append('\n'); break;
                    case 't': out.append('\t'); break;
                    case 'r': out.append('\r'); break;
                    case 'b': out.append('\b'); break;
                    case 'f': out.append('\f'); break;
                    case 'u':
                        out.append((char) Integer.parseInt(text.substring(at, at + 4), 16));
                        at += 4;
                        break;
                    default: out.append(escaped);  // \" \\ \/
                }
            }
            throw error("unterminated string");
        }

        private void skipSpace() {
            while (at < text.length() && Character.isWhitespace(text.charAt(at))) {
                at++;
            }
        }

        private boolean peek(char c) {
            skipSpace();
            if (at < text.length() && text.charAt(at) == c) {
                at++;
                return true;
            }
            return false;
        }

        private void expect(char c) {
            if (!peek(c)) {
                throw error("expected '" + c + "'");
            }
        }

        private IllegalArgumentException error(String what) {
            return new IllegalArgumentException("sidecar JSON: " + what + " at character " + at);
        }
    }
}
