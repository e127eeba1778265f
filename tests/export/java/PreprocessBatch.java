import edgexray.EdgexrayPreprocess;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.List;

/**
 * Test driver: runs EdgexrayPreprocess.modelInput on many images in one JVM start.
 *
 * <p>Each line of the manifest (tab-separated): pixels file (little-endian int32 ARGB, row by
 * row), width, height, EXIF orientation, output height, output width, normalization, input
 * scale, input zero point, output file for the input tensor's bytes.
 */
public final class PreprocessBatch {
    public static void main(String[] args) throws IOException {
        List<String> lines = Files.readAllLines(Paths.get(args[0]));
        for (String line : lines) {
            String[] f = line.split("\t");
            int width = Integer.parseInt(f[1]);
            int height = Integer.parseInt(f[2]);
            int[] argb = new int[width * height];
            ByteBuffer.wrap(Files.readAllBytes(Paths.get(f[0])))
                    .order(ByteOrder.LITTLE_ENDIAN).asIntBuffer().get(argb);
            byte[] input = EdgexrayPreprocess.modelInput(argb, width, height,
                    Integer.parseInt(f[3]), Integer.parseInt(f[4]), Integer.parseInt(f[5]),
                    f[6], (float) Double.parseDouble(f[7]), Integer.parseInt(f[8]));
            Files.write(Paths.get(f[9]), input);
        }
        System.out.println(lines.size() + " images");
    }
}
