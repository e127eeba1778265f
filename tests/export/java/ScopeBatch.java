import edgexray.EdgexrayPreprocess;
import edgexray.EdgexrayScope;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Test driver: EdgexrayScope's decision for many images in one JVM start.
 *
 * <p>args: the sidecar (JSON), the manifest, the output file. Each manifest line
 * (tab-separated): pixels file (little-endian int32 ARGB as stored), width, height, EXIF
 * orientation, output height, output width, features file (the model's int8 features
 * bytes for this image), features scale, features zero point, and a folder holding, for
 * each turn of EdgexrayScope.TURNS, NAME.gray (the resized film so turned, as Python turns
 * it) and NAME.features (the model's features bytes for it). The Model given to decide
 * answers a turned film with the features whose .gray it equals, and fails on any other
 * film. Each output line: in scope (true/false), distance (%.17g), reason.
 */
public final class ScopeBatch {
    public static void main(String[] args) throws IOException {
        String sidecar = new String(Files.readAllBytes(Paths.get(args[0])), StandardCharsets.UTF_8);
        EdgexrayScope scope = EdgexrayScope.fromSidecar(sidecar);
        List<String> out = new ArrayList<>();
        for (String line : Files.readAllLines(Paths.get(args[1]))) {
            String[] f = line.split("\t");
            int width = Integer.parseInt(f[1]);
            int height = Integer.parseInt(f[2]);
            int[] argb = new int[width * height];
            ByteBuffer.wrap(Files.readAllBytes(Paths.get(f[0])))
                    .order(ByteOrder.LITTLE_ENDIAN).asIntBuffer().get(argb);
            EdgexrayPreprocess.Gray gray = EdgexrayPreprocess.orient(
                    EdgexrayPreprocess.grayscale(argb, width, height), Integer.parseInt(f[3]));
            byte[] resized = EdgexrayPreprocess.resize(
                    gray, Integer.parseInt(f[4]), Integer.parseInt(f[5])).pixels;
            byte[] features = Files.readAllBytes(Paths.get(f[6]));
            final String turned = f[9];
            EdgexrayScope.Model model = film -> {
                for (String[] turn : EdgexrayScope.TURNS) {
                    try {
                        byte[] expected = Files.readAllBytes(Paths.get(turned, turn[0] + ".gray"));
                        if (java.util.Arrays.equals(expected, film)) {
                            return Files.readAllBytes(Paths.get(turned, turn[0] + ".features"));
                        }
                    } catch (IOException e) {
                        throw new IllegalStateException(e);
                    }
                }
                throw new IllegalStateException("asked about a film no turn makes");
            };
            EdgexrayScope.Decision d = scope.decide(argb, width, height, resized,
                    Integer.parseInt(f[5]), features, (float) Double.parseDouble(f[7]),
                    Integer.parseInt(f[8]), model);
            out.add(d.inScope + "\t" + String.format(Locale.ROOT, "%.17g", d.distance) + "\t"
                    + d.reason);
        }
        Files.write(Paths.get(args[2]), out, StandardCharsets.UTF_8);
    }
}
