using System.Reflection;

// The package's version (package.json's `version`, the CHANGELOG's top entry, the tag unity-v<version>):
// tools/unityrelease.py refuses to tag while these three disagree, and a test holds them equal.
[assembly: AssemblyTitle("Gaia.Realtime")]
[assembly: AssemblyDescription("WebSocket client for the GAIA real-time gateway (com.gaia.realtime)")]
[assembly: AssemblyProduct("com.gaia.realtime")]
[assembly: AssemblyVersion("0.3.0")]
[assembly: AssemblyFileVersion("0.3.0")]
[assembly: AssemblyInformationalVersion("0.3.0")]
