package edgexray;

import java.nio.Buffer;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32;

/**
 * What an edgexray model file says about itself, read out of the .tflite in plain Java 8 (no
 * Android, no TFLite Support library): the threshold, the labels, the output kind and the
 * whole sidecar, with the checks edgexray's edge_runtime/sidecar.py makes.
 *
 * <p>The model file is laid out as LiteRT's metadata tools lay one out: the model flatbuffer
 * (the graph and the standard TFLite ModelMetadata), then its associated files as a zip
 * appended to it, each stored uncompressed: {@code labels.txt} (the class output 0 speaks
 * of) and {@code edgexray.json} (the sidecar). The sidecar's sha256 is the model's identity,
 * the sha256 of the flatbuffer: it is checked here, so a sidecar never travels with another
 * graph. edgexray's tests compile this file and require the values infer.py reads.
 * (With the TFLite Support library, {@code MetadataExtractor.getAssociatedFile("edgexray.json")}
 * gives the same bytes.)
 *
 * <pre>
 * ByteBuffer model = ...;  // the .tflite as the Interpreter gets it, e.g. a MappedByteBuffer
 * EdgexrayModelFile file = EdgexrayModelFile.read(model);
 * String label = probability >= file.threshold ? file.labels[1] : file.labels[0];
 * EdgexrayScope scope = EdgexrayScope.fromSidecar(file.sidecarJson);  // null: no statistics
 * </pre>
 */
public final class EdgexrayModelFile {
    public static final String SIDECAR_FILE = "edgexray.json";
    public static final String LABELS_FILE = "labels.txt";
    public static final String SCHEMA = "edgexray.sidecar/1";

    /** The sidecar's JSON text, as edgexray.json holds it. */
    public final String sidecarJson;
    /** PNEUMONIA when the probability is at least this. */
    public final double threshold;
    /** The classes, negative first: the output value speaks of labels[1]. */
    public final String[] labels;
    /** "logit" (take the sigmoid) or "probability". */
    public final String outputKind;
    /** The model's identity: the sha256 of its flatbuffer, in hex. */
    public final String sha256;

    private static final int LOCAL_HEADER = 0x04034b50;
    private static final int CENTRAL_HEADER = 0x02014b50;
    private static final int END_RECORD = 0x06054b50;
    private static final int END_RECORD_SIZE = 22;
    private static final int STORED = 0;

    private EdgexrayModelFile(String sidecarJson, String sha256, byte[] labelsFile) {
        Map<String, Object> sidecar =
                object(new EdgexrayScope.Json(sidecarJson).value(), "the sidecar");
        if (!SCHEMA.equals(sidecar.get("schema"))) {
            throw new IllegalArgumentException("the sidecar's schema must be " + SCHEMA);
        }
        Object list = sidecar.get("labels");
        if (!(list instanceof List) || ((List<?>) list).size() != 2
                || !(((List<?>) list).get(0) instanceof String)
                || !(((List<?>) list).get(1) instanceof String)) {
            throw new IllegalArgumentException("the sidecar's labels must be two names");
        }
        List<?> names = (List<?>) list;
        labels = new String[] {(String) names.get(0), (String) names.get(1)};
        Object value = sidecar.get("threshold");
        if (!(value instanceof Double) || !((Double) value >= 0.0 && (Double) value <= 1.0)) {
            throw new IllegalArgumentException("the sidecar's threshold must be in [0, 1]");
        }
        threshold = (Double) value;
        Object output = sidecar.get("output");
        Object kind = output instanceof Map ? ((Map<?, ?>) output).get("kind") : null;
        if (!"logit".equals(kind) && !"probability".equals(kind)) {
            throw new IllegalArgumentException(
                    "the sidecar's output.kind must be logit or probability");
        }
        outputKind = (String) kind;
        if (!sha256.equals(sidecar.get("sha256"))) {
            throw new IllegalArgumentException(
                    "the model does not match its sidecar (sha256 differs): the model was changed");
        }
        if (labelsFile != null
                && !new String(labelsFile, StandardCharsets.UTF_8).equals(labels[1] + "\n")) {
            throw new IllegalArgumentException(LABELS_FILE + " does not name " + labels[1]);
        }
        this.sidecarJson = sidecarJson;
        this.sha256 = sha256;
    }

    /**
     * The sidecar inside a model file, checked.
     *
     * @throws IllegalArgumentException no edgexray metadata inside, damaged or compressed
     *     associated files, a sidecar that is not valid or belongs to another graph
     */
    public static EdgexrayModelFile read(ByteBuffer model) {
        ByteBuffer data = model.duplicate().order(ByteOrder.LITTLE_ENDIAN);
        Map<String, byte[]> files = new LinkedHashMap<>();
        int start = associatedFiles(data, files);
        byte[] sidecar = files.get(SIDECAR_FILE);
        if (sidecar == null) {
            throw new IllegalArgumentException("the model carries no " + SIDECAR_FILE);
        }
        return new EdgexrayModelFile(
                new String(sidecar, StandardCharsets.UTF_8),
                sha256(data, start),
                files.get(LABELS_FILE));
    }

    /** One associated file's bytes, or null when the model has no file of that name. */
    public static byte[] associatedFile(ByteBuffer model, String name) {
        ByteBuffer data = model.duplicate().order(ByteOrder.LITTLE_ENDIAN);
        Map<String, byte[]> files = new LinkedHashMap<>();
        associatedFiles(data, files);
        return files.get(name);
    }

    /** Fills files from the zip at the end of data; returns where the zip starts. */
    private static int associatedFiles(ByteBuffer data, Map<String, byte[]> files) {
        int size = data.limit();
        int end = -1;
        int first = Math.max(0, size - END_RECORD_SIZE - 0xFFFF);  // a comment is at most 64 KB
        for (int at = size - END_RECORD_SIZE; at >= first; at--) {
            boolean whole = at + END_RECORD_SIZE + u16(data, at + 20) == size;
            if (data.getInt(at) == END_RECORD && whole) {
                end = at;
                break;
            }
        }
        if (end < 0) {
            throw new IllegalArgumentException(
                    "the model carries no associated files (no edgexray metadata)");
        }
        int count = u16(data, end + 10);
        long directorySize = u32(data, end + 12);
        long directoryOffset = u32(data, end + 16);
        // Offsets count from the file's start (as Python's zipfile appends) or from the
        // zip's (a zip concatenated to the model): the difference is where the zip sits.
        long shift = end - directorySize - directoryOffset;
        if (shift < 0 || directoryOffset == 0xFFFFFFFFL) {
            throw new IllegalArgumentException("the model's associated files are damaged");
        }
        int entry = (int) (directoryOffset + shift);
        int start = entry;
        for (int i = 0; i < count; i++) {
            if (entry + 46 > end || data.getInt(entry) != CENTRAL_HEADER) {
                throw new IllegalArgumentException("the model's associated files are damaged");
            }
            int method = u16(data, entry + 10);
            long crc = u32(data, entry + 16);
            long stored = u32(data, entry + 20);
            long length = u32(data, entry + 24);
            int nameLength = u16(data, entry + 28);
            int skip = nameLength + u16(data, entry + 30) + u16(data, entry + 32);
            long local = u32(data, entry + 42) + shift;
            String name = new String(bytes(data, entry + 46, nameLength), StandardCharsets.UTF_8);
            if (method != STORED || stored != length) {
                throw new IllegalArgumentException("associated file " + name
                        + " is compressed; LiteRT's metadata readers need them stored");
            }
            if (local < 0 || local + 30 > end || data.getInt((int) local) != LOCAL_HEADER) {
                throw new IllegalArgumentException("associated file " + name + " is damaged");
            }
            int at = (int) local + 30 + u16(data, (int) local + 26) + u16(data, (int) local + 28);
            if (at + length > end) {
                throw new IllegalArgumentException("associated file " + name + " is damaged");
            }
            byte[] content = bytes(data, at, (int) length);
            CRC32 check = new CRC32();
            check.update(content, 0, content.length);
            if (check.getValue() != crc) {
                throw new IllegalArgumentException("associated file " + name + " is damaged");
            }
            if (files.put(name, content) != null) {
                throw new IllegalArgumentException("associated file " + name + " appears twice");
            }
            start = (int) Math.min(start, local);
            entry += 46 + skip;
        }
        return start;
    }

    private static String sha256(ByteBuffer data, int length) {
        try {
            MessageDigest digest = MessageDigest.getInstance("SHA-256");
            ByteBuffer flatbuffer = data.duplicate();
            // Through Buffer: Java 9 made position() and limit() return ByteBuffer, which
            // Java 8 and older Android runtimes lack.
            ((Buffer) flatbuffer).position(0);
            ((Buffer) flatbuffer).limit(length);
            digest.update(flatbuffer);
            StringBuilder hex = new StringBuilder();
            for (byte b : digest.digest()) {
                hex.append(String.format("%02x", b & 0xFF));
            }
            return hex.toString();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);  // every Java platform has SHA-256
        }
    }

    private static byte[] bytes(ByteBuffer data, int at, int length) {
        byte[] out = new byte[length];
        ByteBuffer view = data.duplicate();
        ((Buffer) view).position(at);
        view.get(out);
        return out;
    }

    private static int u16(ByteBuffer data, int at) {
        return data.getShort(at) & 0xFFFF;
    }

    private static long u32(ByteBuffer data, int at) {
        return data.getInt(at) & 0xFFFFFFFFL;
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> object(Object value, String what) {
        if (!(value instanceof Map)) {
            throw new IllegalArgumentException(what + " must be a JSON object");
        }
        return (Map<String, Object>) value;
    }
}
