package ai.edgesmith.bundle;

import java.io.File;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * Classifies text with the models of this edgesmith bundle (generated; see README.md).
 *
 * <p>Tokenizes with {@link WordPieceTokenizer} (the ids the model was evaluated with), runs a
 * .ptl model with PyTorch Android Lite or a .pte model with ExecuTorch, and turns the logits into
 * label probabilities. Both runtimes load models from files, so the bundle's models/ and
 * tokenizer/vocab.txt must be on the file system (not inside the APK). Inference blocks: call
 * {@link #classify} off the main thread. One instance may be shared; calls are serialized.
 */
public final class TextClassifier implements AutoCloseable {
    public static final String TARGET = "android";
    public static final String DESCRIPTION = "Android phone, arm64: PyTorch Lite and ExecuTorch";
    /** Label names in the order of the model's logits. */
    public static final List<String> LABELS = Collections.unmodifiableList(Arrays.asList(
            "negative",
            "positive"));
    public static final String DEFAULT_ARTIFACT = "ptl_int8";
    /** Texts are cut to this many tokens, [CLS] and [SEP] included, as in the build's evaluation. */
    public static final int MAX_LENGTH = 128;
    /** Shorter inputs are padded to this many tokens: the smallest sequence the models were exported for. */
    public static final int MIN_LENGTH = 4;
    /** The models' inputs, in the order they take them; each int64 [1, n]. */
    public static final List<String> INPUT_NAMES = Collections.unmodifiableList(Arrays.asList(
            "input_ids",
            "attention_mask",
            "token_type_ids"));
    public static final String VOCAB_PATH = "tokenizer/vocab.txt";
    public static final String EDGESMITH_RUNTIME_VERSION = "0.1.0";

    /** name, format ("ptl" or "pte"), path inside the bundle. */
    private static final String[][] ARTIFACTS = {
        {"ptl_int8", "ptl", "models/ptl_int8.ptl"},
        {"pte_8da4w", "pte", "models/pte_8da4w.pte"},
    };

    /** Runs one model: int64 [1, n] inputs (INPUT_NAMES order) in, float logits [1, LABELS.size()] out. */
    public interface Backend {
        float[] logits(long[][] inputs);

        void close();
    }

    /** The most probable label, its probability, and every label's probability (LABELS order). */
    public static final class Prediction {
        public final String label;
        public final float score;
        public final float[] scores;

        Prediction(String label, float score, float[] scores) {
            this.label = label;
            this.score = score;
            this.scores = scores;
        }

        @Override
        public String toString() {
            return label + " (" + score + ")";
        }
    }

    private final WordPieceTokenizer tokenizer;
    private final Backend backend;

    /** A classifier over any backend, e.g. another runtime or a fake one in unit tests. */
    public TextClassifier(WordPieceTokenizer tokenizer, Backend backend) {
        this.tokenizer = tokenizer;
        this.backend = backend;
    }

    /** Opens the default artifact of the bundle unpacked at {@code bundleDir}. */
    public static TextClassifier open(File bundleDir) throws IOException {
        return open(bundleDir, DEFAULT_ARTIFACT);
    }

    /** Opens the artifact {@code name} (one of {@link #artifacts()}) of the bundle at {@code bundleDir}. */
    public static TextClassifier open(File bundleDir, String name) throws IOException {
        String[] artifact = artifact(name);
        File model = new File(bundleDir, artifact[2]);
        if (!model.isFile()) {
            throw new FileNotFoundException(model + ": no such model file; copy the bundle's models/ there");
        }
        WordPieceTokenizer tokenizer = WordPieceTokenizer.load(new File(bundleDir, VOCAB_PATH));
        String format = artifact[1];
        // Each backend class touches only its own runtime, so an app may ship just one of the two AARs.
        if (format.equals("ptl")) {
            return new TextClassifier(tokenizer, new PyTorchLiteBackend(model.getAbsolutePath()));
        }
        if (format.equals("pte")) {
            return new TextClassifier(tokenizer, new ExecuTorchBackend(model.getAbsolutePath()));
        }
        throw new IllegalArgumentException("artifact " + name + " is a " + format + " model; this classifier runs ptl and pte");
    }

    /** Names of the bundle's artifacts. */
    public static List<String> artifacts() {
        List<String> names = new ArrayList<>();
        for (String[] artifact : ARTIFACTS) {
            names.add(artifact[0]);
        }
        return Collections.unmodifiableList(names);
    }

    private static String[] artifact(String name) {
        for (String[] artifact : ARTIFACTS) {
            if (artifact[0].equals(name)) {
                return artifact;
            }
        }
        throw new IllegalArgumentException("no artifact " + name + " in this bundle; choose one of " + artifacts());
    }

    public synchronized Prediction classify(String text) {
        WordPieceTokenizer.Encoding encoding = tokenizer.encode(text, MAX_LENGTH).padTo(MIN_LENGTH);
        long[][] inputs = new long[INPUT_NAMES.size()][];
        for (int i = 0; i < inputs.length; i++) {
            inputs[i] = input(INPUT_NAMES.get(i), encoding);
        }
        return prediction(backend.logits(inputs));
    }

    private static long[] input(String name, WordPieceTokenizer.Encoding encoding) {
        switch (name) {
            case "input_ids":
                return encoding.inputIds;
            case "attention_mask":
                return encoding.attentionMask;
            case "token_type_ids":
                return encoding.tokenTypeIds;
            default:
                throw new IllegalStateException("the model takes an input " + name + " that the tokenizer does not produce");
        }
    }

    /** Softmax over one text's logits and the arg-max label. */
    public static Prediction prediction(float[] logits) {
        if (logits.length != LABELS.size()) {
            throw new IllegalStateException(
                    "the model returned " + logits.length + " logits for " + LABELS.size() + " labels; is it the bundle's model?");
        }
        float[] scores = softmax(logits);
        int best = 0;
        for (int i = 1; i < scores.length; i++) {
            if (scores[i] > scores[best]) {
                best = i;
            }
        }
        return new Prediction(LABELS.get(best), scores[best], scores);
    }

    public static float[] softmax(float[] logits) {
        double max = Double.NEGATIVE_INFINITY;
        for (float x : logits) {
            max = Math.max(max, x);
        }
        double sum = 0;
        double[] exp = new double[logits.length];
        for (int i = 0; i < logits.length; i++) {
            exp[i] = Math.exp(logits[i] - max);  // minus the max: no overflow
            sum += exp[i];
        }
        float[] out = new float[logits.length];
        for (int i = 0; i < logits.length; i++) {
            out[i] = (float) (exp[i] / sum);
        }
        return out;
    }

    @Override
    public synchronized void close() {
        backend.close();
    }

    /** TorchScript lite (.ptl) models through org.pytorch:pytorch_android_lite. */
    static final class PyTorchLiteBackend implements Backend {
        private final org.pytorch.Module module;

        PyTorchLiteBackend(String path) {
            module = org.pytorch.LiteModuleLoader.load(path);
        }

        @Override
        public float[] logits(long[][] inputs) {
            org.pytorch.IValue[] values = new org.pytorch.IValue[inputs.length];
            for (int i = 0; i < inputs.length; i++) {
                values[i] = org.pytorch.IValue.from(org.pytorch.Tensor.fromBlob(inputs[i], new long[] {1, inputs[i].length}));
            }
            return logitsOf(module.forward(values)).getDataAsFloatArray();
        }

        /** The logits tensor, whether the model returns it bare, first in a tuple, or under "logits". */
        private static org.pytorch.Tensor logitsOf(org.pytorch.IValue value) {
            if (value.isTensor()) {
                return value.toTensor();
            }
            if (value.isTuple() && value.toTuple().length > 0) {
                return logitsOf(value.toTuple()[0]);
            }
            if (value.isDictStringKey()) {
                Map<String, org.pytorch.IValue> dict = value.toDictStringKey();
                if (dict.containsKey("logits")) {
                    return logitsOf(dict.get("logits"));
                }
            }
            throw new IllegalStateException("the model returned no logits tensor");
        }

        @Override
        public void close() {
            module.destroy();
        }
    }

    /** ExecuTorch (.pte) models through org.pytorch:executorch-android. */
    static final class ExecuTorchBackend implements Backend {
        private final org.pytorch.executorch.Module module;

        ExecuTorchBackend(String path) {
            module = org.pytorch.executorch.Module.load(path);
        }

        @Override
        public float[] logits(long[][] inputs) {
            org.pytorch.executorch.EValue[] values = new org.pytorch.executorch.EValue[inputs.length];
            for (int i = 0; i < inputs.length; i++) {
                values[i] = org.pytorch.executorch.EValue.from(
                        org.pytorch.executorch.Tensor.fromBlob(inputs[i], new long[] {1, inputs[i].length}));
            }
            org.pytorch.executorch.EValue[] out = module.forward(values);
            if (out.length == 0 || !out[0].isTensor()) {
                throw new IllegalStateException("the ExecuTorch model returned no logits tensor (see logcat for its error)");
            }
            return out[0].toTensor().getDataAsFloatArray();
        }

        @Override
        public void close() {
            module.destroy();
        }
    }
}
