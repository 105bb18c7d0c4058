package org.pytorch;

/**
 * Compile-only shim of org.pytorch.LiteModuleLoader (pytorch_android_lite 2.1.0) for tests; never
 * shipped. The overloads taking org.pytorch.Device or android.content.res.AssetManager are left out.
 */
public class LiteModuleLoader {
    public static Module load(final String modelPath) {
        throw new UnsupportedOperationException("compile-only shim");
    }
}
