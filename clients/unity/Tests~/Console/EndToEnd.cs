using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using Gaia.Realtime;
using Newtonsoft.Json;
using Newtonsoft.Json.Linq;

// Plays the package against a running gateway, one step per line on stdout (JSON), waiting on
// stdin where another player (the Python test) has to act. Run by tests/test_unity_client.py.
public static class EndToEnd
{
    static readonly QueueDispatcher MainThread = new QueueDispatcher();
    static readonly BlockingLines Input = new BlockingLines();

    public static int Main(string[] args)
    {
        try
        {
            Play(args[0], args[1], args[2]);
            return 0;
        }
        catch (Exception e)
        {
            Emit("failed", new JObject { { "error", e.ToString() } });
            return 1;
        }
    }

    static void Play(string gateway, string token, string badToken)
    {
        var client = new GaiaClient(new GaiaClientOptions {
            GatewayUrl = gateway, Token = token, Dispatcher = MainThread, InitialBackoff = TimeSpan.FromSeconds(2) });
        var seqs = new List<long>();
        var moves = new List<PresenceChange>();
        ResumeInfo resumed = null;
        var closes = new List<int>();
        client.WorldUpdated += u => seqs.Add((long)u["seq"]);
        client.PresenceChanged += p => { if (p.Event == "move") moves.Add(p); };
        client.Resumed += r => resumed = r;
        client.Closed += c => closes.Add(c.Code);

        var hello = Pump(client.ConnectAsync());
        PumpUntil(() => client.World.Version >= 0, "the first snapshot");
        Emit("joined", new JObject { { "user_id", (string)hello["user_id"] }, { "version", client.World.Version },
                                     { "roster", JObject.FromObject(client.World.Roster) } });

        var go = Pump(client.ActAsync("go", new { destination = "main_room" }));
        var take = Pump(client.ActAsync("collect_item", new { instance_id = "dream_bottle_1" }));
        PumpUntil(() => client.World.Version >= (long)take["snapshot_version"], "the collect's delta");
        Emit("collected", new JObject { { "go", go["success"] }, { "take", take["success"] },
                                        { "area", client.World.CurrentArea },
                                        { "inventory", new JArray(client.World.Inventory.Select(i => i["instance_id"])) } });

        Emit("ready_for_other", new JObject());
        var theirVersion = long.Parse(Input.Next());
        PumpUntil(() => client.World.Version >= theirVersion && moves.Any(m => m.UserId == "bob"), "bob's step");
        Emit("saw_other", new JObject { { "version", client.World.Version },
                                        { "shelf_2", client.World.ItemsAt("main_room", "shelf_2").Count },
                                        { "bob_area", client.World.Roster.ContainsKey("bob") ? client.World.Roster["bob"] : null },
                                        { "moves", moves.Count } });

        var cursor = client.LastSeq;
        client.Abort();
        PumpUntil(() => closes.Count > 0, "the drop");
        Emit("dropped", new JObject { { "last_seq", cursor }, { "close", closes[0] } });
        var kbVersion = long.Parse(Input.Next());
        PumpUntil(() => resumed != null && client.World.Version >= kbVersion, "the resume");
        Emit("resumed", new JObject { { "replayed", resumed.Replayed }, { "from_seq", resumed.FromSeq },
                                      { "version", client.World.Version }, { "gaps", client.World.Gaps },
                                      { "snapshots", client.World.Snapshots },
                                      { "in_order", seqs.Zip(seqs.Skip(1), (a, b) => b > a).All(x => x) },
                                      { "shelf_1", client.World.ItemsAt("main_room", "shelf_1").Count } });

        // A hole in the version chain is never applied: the client asks for a snapshot instead.
        var probe = new LocalWorld();
        probe.ApplySnapshot((JObject)client.World.View.DeepClone());
        var hole = new JObject { { "base_version", probe.Version + 1 }, { "snapshot_version", probe.Version + 2 },
                                 { "changes", new JArray() } };
        var stale = new JObject { { "base_version", probe.Version - 1 }, { "snapshot_version", probe.Version },
                                  { "changes", new JArray() } };
        Emit("chain", new JObject { { "hole", probe.ApplyUpdate(hole).ToString() },
                                    { "stale", probe.ApplyUpdate(stale).ToString() }, { "gaps", probe.Gaps } });
        var before = client.World.Snapshots;
        var state = Pump(client.GetStateAsync());
        Emit("get_state", new JObject { { "snapshots", state.Snapshots - before }, { "version", state.Version } });

        var rtt = Pump(client.PingAsync());
        Emit("ping", new JObject { { "rtt_ms", rtt } });

        var authRequired = 0;
        var intruder = new GaiaClient(new GaiaClientOptions { GatewayUrl = gateway, Token = badToken, Dispatcher = MainThread });
        intruder.AuthRequired += code => authRequired = code;
        string refused = null;
        try { Pump(intruder.ConnectAsync()); }
        catch (AggregateException e) when (e.InnerException is GaiaAuthException) { refused = e.InnerException.Message; }
        catch (GaiaAuthException e) { refused = e.Message; }
        PumpUntil(() => authRequired != 0, "AuthRequired");
        Thread.Sleep(2500);  // longer than the first backoff: a client that retried would show it here
        MainThread.Drain();
        Emit("bad_token", new JObject { { "refused", refused }, { "auth_required", authRequired },
                                        { "retried", intruder.IsOpen } });

        Pump(client.CloseAsync());
        Emit("done", new JObject());
    }

    static T Pump<T>(Task<T> task)
    {
        PumpUntil(() => task.IsCompleted, "a task");
        return task.GetAwaiter().GetResult();
    }

    static void Pump(Task task)
    {
        PumpUntil(() => task.IsCompleted, "a task");
        task.GetAwaiter().GetResult();
    }

    static void PumpUntil(Func<bool> done, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (true)
        {
            MainThread.Drain();  // this thread is the game's main thread: every event and state change runs here
            if (done())
                return;
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException("waited 20 s for " + what);
            Thread.Sleep(5);
        }
    }

    static void Emit(string step, JObject data)
    {
        data["step"] = step;
        Console.Out.WriteLine(data.ToString(Formatting.None));
        Console.Out.Flush();
    }

    /// <summary>stdin lines, read on a thread of their own so the main thread keeps pumping.</summary>
    sealed class BlockingLines
    {
        readonly System.Collections.Concurrent.BlockingCollection<string> lines =
            new System.Collections.Concurrent.BlockingCollection<string>();

        public BlockingLines()
        {
            var reader = new Thread(() => { string line; while ((line = Console.In.ReadLine()) != null) lines.Add(line); });
            reader.IsBackground = true;
            reader.Start();
        }

        public string Next()
        {
            string line = null;
            var deadline = DateTime.UtcNow.AddSeconds(20);
            while (!lines.TryTake(out line, 5))
            {
                MainThread.Drain();
                if (DateTime.UtcNow > deadline)
                    throw new TimeoutException("no line from the test on stdin");
            }
            return line;
        }
    }
}
