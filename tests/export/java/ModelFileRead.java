import edgexray.EdgexrayModelFile;
import edgexray.EdgexrayScope;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;

/**
 * For each model file argument, one line: what EdgexrayModelFile reads (the sidecar text
 * written to MODEL.sidecar.json), or the error.
 */
public final class ModelFileRead {
    public static void main(String[] args) throws IOException {
        for (String path : args) {
            ByteBuffer model = ByteBuffer.wrap(Files.readAllBytes(Paths.get(path)));
            try {
                EdgexrayModelFile file = EdgexrayModelFile.read(model);
                EdgexrayScope scope = EdgexrayScope.fromSidecar(file.sidecarJson);
                System.out.println("threshold=" + Double.toString(file.threshold)
                        + "\tlabels=" + file.labels[0] + "," + file.labels[1]
                        + "\tkind=" + file.outputKind
                        + "\tsha256=" + file.sha256
                        + "\tscope=" + (scope == null ? "none"
                                : scope.featureIndex + "," + scope.featureSize + ","
                                        + Double.toString(scope.cutoff))
                        + "\tsidecar=" + path + ".sidecar.json");
                Files.write(Paths.get(path + ".sidecar.json"),
                        file.sidecarJson.getBytes(StandardCharsets.UTF_8));
            } catch (IllegalArgumentException e) {
                System.out.println("error: " + e.getMessage());
            }
        }
    }
}
