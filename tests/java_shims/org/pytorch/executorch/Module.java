package org.pytorch.executorch;

/**
 * Compile-only shim of org.pytorch.executorch.Module (executorch-android 1.x) for tests; never
 * shipped. getMethodMetadata and etdump are left out.
 */
public class Module {
    public static final int LOAD_MODE_FILE = 0;
    public static final int LOAD_MODE_MMAP = 1;
    public static final int LOAD_MODE_MMAP_USE_MLOCK = 2;
    public static final int LOAD_MODE_MMAP_USE_MLOCK_IGNORE_ERRORS = 3;

    private Module() {
    }

    private static UnsupportedOperationException shim() {
        return new UnsupportedOperationException("compile-only shim");
    }

    public static Module load(final String modelPath) { throw shim(); }
    public static Module load(final String modelPath, int loadMode) { throw shim(); }
    public static Module load(final String modelPath, int loadMode, int numThreads) { throw shim(); }

    public EValue[] forward(EValue... inputs) { throw shim(); }
    public EValue[] execute(String methodName, EValue... inputs) { throw shim(); }
    public int loadMethod(String methodName) { throw shim(); }
    public String[] getMethods() { throw shim(); }
    public String[] readLogBuffer() { throw shim(); }
    public static String[] readLogBufferStatic() { throw shim(); }
    public void destroy() { throw shim(); }
}
