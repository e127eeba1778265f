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
 * sidecar's {@code scope} block: either form of the block (scope/1, the full covariance;
 * scope/2, leading components and one residual variance, for wide feature outputs). DICOM
 * tags are not checked here: the app decodes images, not DICOM files. Plain Java 8, no
 * Android imports.
 *
 * <p>A block with an orientation check (scope.py's TURNS) also asks the model about the
 * film turned back (upside down) or inverted back (a negative): the app passes a
 * {@link Model} that runs its interpreter on a resized grey film and returns the features
 * output's bytes.
 *
 * <pre>
 * EdgexrayScope scope = EdgexrayScope.fromSidecar(sidecarJsonText);  // null: no statistics
 * // after interpreter.runForMultipleInputsOutputs(...), features = output scope.featureIndex
 * EdgexrayScope.Decision d = scope.decide(argb, w, h, resizedGray, inputWidth, featureBytes,
 *         featureScale, featureZeroPoint, gray -> runModelAndGetFeatures(gray));
 * String label = d.inScope ? (probability >= threshold ? "PNEUMONIA" : "NORMAL")
 *         : EdgexrayScope.OUT_OF_SCOPE;
 * </pre>
 */
public final class EdgexrayScope {
    public static final String OUT_OF_SCOPE = "OUT_OF_SCOPE";
    public static final String SCHEMA = "edgexray.scope/1";
    public static final String SUBSPACE_SCHEMA = "edgexray.scope/2";
    /** scope.py's constants: keep them equal (the tests compare the decisions). */
    public static final double FLAT_STD = 10.0;
    public static final int FLAT_LEVELS = 32;
    public static final double COLOUR_LIMIT = 2.5;
    public static final int COLOUR_SAMPLE = 256;
    public static final double MAX_CUTOFF_PER_ROOT_SIZE = 100.0;

    /** Index and size of the model output that holds the pooled features. */
    public final int featureIndex;
    public final int featureSize;
    public final double cutoff;
    private final double[] mean;
    private final double[][] whitening;
    /** scope/2: the variance along each row of the whitening matrix; null for scope/1. */
    private final double[] componentVariances;
    /** scope/2: the variance of every direction outside those rows; NaN for scope/1. */
    private final double residualVariance;
    /** The orientation check's turns (scope.py TURNS names) and margin; none: no check. */
    private final String[] turns;
    private final double margin;

    /** scope.py's TURNS: each turn's name, how a film so turned looks, the film with the
     * turn undone, and what the sender should do. */
    public static final String[][] TURNS = {
        {"rot180", "upside down (turned 180 degrees)", "turned back",
            "turn the film upright and send it again"},
        {"vflip", "upside down (flipped top to bottom)", "turned back",
            "turn the film upright and send it again"},
        {"negative", "a negative (grey levels inverted: bones dark, lungs light)",
            "inverted back", "send the film with bones light and lungs dark, not its negative"},
    };

    /** The app's model, asked for the features output of another resized grey film. */
    public interface Model {
        /** The int8 bytes of the features output for gray (resized, before equalisation). */
        byte[] features(byte[] gray);
    }

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
        boolean subspace = SUBSPACE_SCHEMA.equals(block.get("schema"));
        if (!subspace && !SCHEMA.equals(block.get("schema"))) {
            throw new IllegalArgumentException(
                    "scope.schema must be " + SCHEMA + " or " + SUBSPACE_SCHEMA);
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
        if (cutoff > MAX_CUTOFF_PER_ROOT_SIZE * Math.sqrt(featureSize)) {
            throw new IllegalArgumentException("scope.cutoff is no bound: every film would pass");
        }
        if (rank(whitening) < whitening.length) {
            throw new IllegalArgumentException("scope.whitening is singular");
        }
        Object orientation = block.get("orientation");
        if (orientation == null) {
            turns = new String[0];
            margin = 0.0;
        } else {
            Map<String, Object> check = object(orientation, "scope.orientation");
            List<Object> names = list(check.get("turns"), "scope.orientation.turns");
            turns = new String[names.size()];
            for (int i = 0; i < turns.length; i++) {
                turns[i] = String.valueOf(names.get(i));
                if (known(turns[i]) == null) {
                    throw new IllegalArgumentException("unknown turn " + turns[i]);
                }
            }
            margin = number(check.get("margin"), "scope.orientation.margin");
            if (!(margin >= 0) || Double.isInfinite(margin)) {
                throw new IllegalArgumentException("scope.orientation.margin must be >= 0");
            }
        }
        if (!subspace) {
            componentVariances = null;
            residualVariance = Double.NaN;
            return;
        }
        if (rows.isEmpty() || rows.size() >= featureSize) {
            throw new IllegalArgumentException(
                    "scope.whitening must have fewer rows than " + featureSize + " columns");
        }
        componentVariances = vector(
                block.get("component_variances"), rows.size(), "scope.component_variances");
        for (double variance : componentVariances) {
            if (!(variance > 0)) {
                throw new IllegalArgumentException(
                        "scope.component_variances must be positive numbers");
            }
        }
        residualVariance = number(block.get("residual_variance"), "scope.residual_variance");
        if (!(residualVariance > 0) || Double.isInfinite(residualVariance)) {
            throw new IllegalArgumentException(
                    "scope.residual_variance must be a positive number");
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

    /**
     * Mahalanobis distance of dequantized features (scope.py's Statistics.distance): scope/1
     * |W x| with x = f - mean; scope/2 |z|^2 + (|x|^2 - sum(variance * z^2)) / residual
     * variance under the root, z = W x, the second term never below 0.
     */
    public double distance(double[] features) {
        if (features.length != featureSize) {
            throw new IllegalArgumentException("need " + featureSize + " features");
        }
        double sum = 0.0;
        double alongRows = 0.0;
        for (int r = 0; r < whitening.length; r++) {
            double[] row = whitening[r];
            double value = 0.0;
            for (int i = 0; i < featureSize; i++) {
                value += row[i] * (features[i] - mean[i]);
            }
            sum += value * value;
            if (componentVariances != null) {
                alongRows += componentVariances[r] * value * value;
            }
        }
        if (componentVariances == null) {
            return Math.sqrt(sum);
        }
        double squares = 0.0;
        for (int i = 0; i < featureSize; i++) {
            squares += (features[i] - mean[i]) * (features[i] - mean[i]);
        }
        return Math.sqrt(sum + Math.max(squares - alongRows, 0.0) / residualVariance);
    }

    /** The rank of a matrix by Gaussian elimination with partial pivoting (numpy's
     * matrix_rank tolerance: the largest pivot times the size times machine epsilon). */
    static int rank(double[][] matrix) {
        int rows = matrix.length;
        int columns = rows == 0 ? 0 : matrix[0].length;
        double[][] m = new double[rows][];
        double largest = 0.0;
        for (int r = 0; r < rows; r++) {
            m[r] = matrix[r].clone();
            for (double v : m[r]) {
                largest = Math.max(largest, Math.abs(v));
            }
        }
        double tolerance = largest * Math.max(rows, columns) * Math.ulp(1.0);
        int rank = 0;
        for (int c = 0; c < columns && rank < rows; c++) {
            int pivot = rank;
            for (int r = rank + 1; r < rows; r++) {
                if (Math.abs(m[r][c]) > Math.abs(m[pivot][c])) {
                    pivot = r;
                }
            }
            if (!(Math.abs(m[pivot][c]) > tolerance)) {
                continue;
            }
            double[] swap = m[pivot];
            m[pivot] = m[rank];
            m[rank] = swap;
            for (int r = rank + 1; r < rows; r++) {
                double factor = m[r][c] / m[rank][c];
                for (int k = c; k < columns; k++) {
                    m[r][k] -= factor * m[rank][k];
                }
            }
            rank++;
        }
        return rank;
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
        return decide(argb, width, height, gray, 0, features, featureScale, featureZeroPoint,
                null);
    }

    /**
     * The decision for one image, the orientation check included when the block has one.
     *
     * @param grayWidth the width of gray (the model input's)
     * @param model the app's model, for the film turned back; null skips that check
     */
    public Decision decide(int[] argb, int width, int height, byte[] gray, int grayWidth,
            byte[] features, float featureScale, int featureZeroPoint, Model model) {
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
        // Of several turns that bring the film closer, the closest is named (scope.py).
        String[] found = null;
        double closest = Double.POSITIVE_INFINITY;
        for (int t = 0; model != null && t < turns.length; t++) {
            byte[] turned = turn(turns[t], gray, grayWidth);
            double back = distance(dequantize(model.features(turned), featureScale,
                    featureZeroPoint));
            if (back <= cutoff && back < measured - margin && back < closest) {
                found = known(turns[t]);
                closest = back;
            }
        }
        if (found != null) {
            return new Decision(false, String.format(Locale.ROOT,
                    "looks %s: %s it is like the training films (feature distance"
                    + " %.1f against %.1f); %s",
                    found[1], found[2], closest, measured, found[3]), measured);
        }
        return new Decision(true, "in scope", measured);
    }

    private static String[] known(String turn) {
        for (String[] known : TURNS) {
            if (known[0].equals(turn)) {
                return known;
            }
        }
        return null;
    }

    /** A row-major grey film turned (scope.py TURNS): rot180 reverses it, vflip its rows,
     * negative inverts its grey levels. */
    public static byte[] turn(String name, byte[] gray, int width) {
        byte[] out = new byte[gray.length];
        if ("negative".equals(name)) {
            for (int i = 0; i < gray.length; i++) {
                out[i] = (byte) (255 - (gray[i] & 0xff));
            }
            return out;
        }
        int rows = gray.length / width;
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < width; c++) {
                int from = "rot180".equals(name) ? (rows - 1 - r) * width + (width - 1 - c)
                        : (rows - 1 - r) * width + c;
                out[r * width + c] = gray[from];
            }
        }
        return out;
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
