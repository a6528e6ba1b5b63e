using System;
using System.Collections;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using Gaia.Realtime;
using Newtonsoft.Json;
using Newtonsoft.Json.Linq;

/// <summary>
/// A console game played the way Unity runs one: a main thread that pumps the dispatcher every
/// frame (16 ms) and advances coroutines. The test (tests/clients/test_unity_client.py) sends one JSON
/// command per stdin line; each command runs as a coroutine and answers one JSON line on stdout.
/// Anything the package lets escape Drain() is counted as a frame exception.
/// </summary>
public static class ConsoleGame
{
    static readonly QueueDispatcher MainThread = new QueueDispatcher();
    static readonly Dictionary<string, Player> Players = new Dictionary<string, Player>();
    static readonly BlockingCollection<JObject> Commands = new BlockingCollection<JObject>();
    static readonly List<IEnumerator> Running = new List<IEnumerator>();
    static readonly List<string> FrameErrors = new List<string>();
    static bool quit;

    public static int Main(string[] args)
    {
        var reader = new Thread(() =>
        {
            string line;
            while ((line = Console.In.ReadLine()) != null)
                Commands.Add(JObject.Parse(line));
            Commands.Add(new JObject { { "cmd", "quit" }, { "n", -1 } });
        });
        reader.IsBackground = true;
        reader.Start();
        while (!quit)
        {
            try
            {
                MainThread.Drain();
            }
            catch (Exception e)
            {
                FrameErrors.Add(e.ToString());
            }
            JObject command;
            while (Commands.TryTake(out command))
                Running.Add(Run(command));
            foreach (var coroutine in Running.ToArray())
                if (!coroutine.MoveNext())
                    Running.Remove(coroutine);
            Thread.Sleep(16);
        }
        foreach (var player in Players.Values)
            player.Client.Dispose();
        return 0;
    }

    /// <summary>One command as a coroutine; its answer (or its failure) is one line.</summary>
    static IEnumerator Run(JObject command)
    {
        var n = (int)command["n"];
        IEnumerator body;
        try
        {
            body = Start(command);
        }
        catch (Exception e)
        {
            Reply(n, new JObject { { "error", e.ToString() } });
            yield break;
        }
        var stack = new Stack<IEnumerator>();  // nested coroutines, as Unity runs `yield return Wait(task)`
        stack.Push(body);
        while (stack.Count > 0)
        {
            var top = stack.Peek();
            bool more;
            try
            {
                more = top.MoveNext();
            }
            catch (Exception e)
            {
                Reply(n, new JObject { { "error", e.ToString() } });
                yield break;
            }
            if (!more)
            {
                stack.Pop();
                continue;
            }
            var answer = top.Current as JObject;
            if (answer != null)
            {
                Reply(n, answer);
                yield break;
            }
            var nested = top.Current as IEnumerator;
            if (nested != null)
            {
                stack.Push(nested);
                continue;
            }
            yield return null;
        }
        Reply(n, new JObject { { "error", "the command ended without an answer" } });
    }

    static IEnumerator Start(JObject c)
    {
        var cmd = (string)c["cmd"];
        if (cmd == "quit")
        {
            quit = true;
            return Answer(new JObject());
        }
        if (cmd == "new")
            return New(c);
        if (cmd == "units")
            return Units((string)c["down_url"]);
        if (cmd == "frames")
            return Answer(new JObject { { "frame_exceptions", new JArray(FrameErrors) } });
        if (cmd == "version")
            return Version();
        if (cmd == "connect_deadline")
            return ConnectDeadline((string)c["url"], (int)c["connect_ms"]);
        var player = Players[(string)c["player"]];
        switch (cmd)
        {
            case "connect": return Connect(player);
            case "act": return Act(player, (string)c["action"], (JObject)c["args"]);
            case "chat": return Chat(player, (string)c["message"]);
            case "compare": return Compare(player);
            case "status": return Answer(player.Status());
            case "throw_once": player.ThrowOnNextUpdate = true; return Answer(new JObject());
            case "act_blocked": return ActBlocked(player, (int)c["ms"]);
            case "skew": return Skew(player);
            case "close": return Close(player);
            case "dispose": player.Client.Dispose(); return Answer(new JObject());
            case "bad_token": return BadToken(player, (string)c["token"]);
        }
        throw new ArgumentException("unknown command " + cmd);
    }

    static IEnumerator Answer(JObject answer)
    {
        yield return answer;
    }

    static IEnumerator Wait(Task task)
    {
        while (!task.IsCompleted)
            yield return null;
    }

    static IEnumerator New(JObject c)
    {
        var options = new GaiaClientOptions {
            GatewayUrl = (string)c["url"], Token = (string)c["token"], Dispatcher = MainThread,
            InitialBackoff = TimeSpan.FromMilliseconds((int)c["backoff_ms"]), MaxBackoff = TimeSpan.FromSeconds(2),
            RequestTimeout = TimeSpan.FromMilliseconds((int)c["timeout_ms"]),
            ConnectTimeout = TimeSpan.FromMilliseconds(c["connect_ms"] != null ? (int)c["connect_ms"] : (int)c["timeout_ms"]),
            PingInterval = TimeSpan.FromMilliseconds((int)c["ping_ms"]), PongTimeout = TimeSpan.FromMilliseconds((int)c["pong_ms"]) };
        if (c["experience"] != null)
            options.Experience = (string)c["experience"];  // another experience of the same gateway
        var counted = new Counted();
        if (c["seam"] != null && (bool)c["seam"])
            options.Transport = () => new CountingTransport(new ClientWebSocketTransport(), counted);
        Players[(string)c["player"]] = new Player(new GaiaClient(options)) { Url = options.GatewayUrl, Seam = counted };
        yield return new JObject();
    }

    static IEnumerator Connect(Player p)
    {
        var connecting = p.Client.ConnectAsync();
        yield return Wait(connecting);
        var hello = connecting.Result;
        while (p.Client.World.Version < 0)
            yield return null;  // the snapshot follows `connected`
        yield return new JObject { { "connection_id", hello["connection_id"] }, { "user_id", hello["user_id"] },
                                   { "version", p.Client.World.Version } };
    }

    static IEnumerator Act(Player p, string action, JObject args)
    {
        var wasOpen = p.Client.IsOpen;
        var acting = p.Client.ActAsync(action, args);
        yield return Wait(acting);
        var answer = acting.Result;
        while (answer["snapshot_version"] != null && (string)answer["type"] == "action_response" &&
               p.Client.World.Version < (long)answer["snapshot_version"] && (bool)answer["success"])
            yield return null;  // its own delta, applied
        yield return new JObject { { "response", answer }, { "was_open", wasOpen } };
    }

    static IEnumerator Chat(Player p, string message)
    {
        JArray firstInventory = null;
        long firstVersion = -1;
        var chunks = 0;
        var chatting = p.Client.ChatAsync(message, null, delta =>
        {
            chunks++;
            if (firstInventory != null)
                return;
            firstInventory = new JArray(p.Client.World.Inventory.Select(i => i.InstanceId));
            firstVersion = p.Client.World.Version;
        });
        yield return Wait(chatting);
        var result = chatting.Result;
        yield return new JObject { { "action", result.Action }, { "success", result.Success }, { "text", result.Text },
                                   { "narrator", result.Narrator }, { "chunks", chunks }, { "first_inventory", firstInventory },
                                   { "first_version", firstVersion }, { "error", result.Error == null ? null : result.Error.Code } };
    }

    /// <summary>The local world just before a fresh snapshot replaced it, against that snapshot.</summary>
    static IEnumerator Compare(Player p)
    {
        JObject lastLocal = null, lastFresh = null;
        for (var attempt = 0; attempt < 10; attempt++)
        {
            p.Pairs.Clear();
            var asking = p.Client.GetStateAsync();
            yield return Wait(asking);
            if (asking.IsFaulted)
                continue;  // a drop in between: ask again on the resumed connection
            var pair = p.Pairs.Last();
            lastLocal = Normal(pair[0]);
            lastFresh = Normal(pair[1]);
            if ((long)lastLocal["snapshot_version"] != (long)lastFresh["snapshot_version"])
                continue;  // a delta on its way when the snapshot was taken: a later one will match
            if (JToken.DeepEquals(lastLocal, lastFresh))
                yield return new JObject { { "equal", true }, { "attempts", attempt + 1 }, { "version", lastFresh["snapshot_version"] } };
            var withoutPlayers = (JObject)lastLocal.DeepClone();
            var freshWithout = (JObject)lastFresh.DeepClone();
            withoutPlayers.Remove("players");
            freshWithout.Remove("players");
            if (!JToken.DeepEquals(withoutPlayers, freshWithout))
                break;  // the world differs: no race explains that
        }
        yield return new JObject { { "equal", false }, { "local", lastLocal }, { "fresh", lastFresh } };
    }

    /// <summary>A view with its arrays of items sorted by id and its players by user (order carries no meaning).</summary>
    static JObject Normal(JObject view)
    {
        var copy = (JObject)view.DeepClone();
        copy.Remove("type");
        foreach (var array in copy.Descendants().OfType<JArray>().ToList())
        {
            var sorted = array.Children().OrderBy(t => t is JObject ? (string)(t["instance_id"] ?? t["user_id"]) : t.ToString(),
                                                  StringComparer.Ordinal).ToList();
            array.RemoveAll();
            foreach (var item in sorted)
                array.Add(item);
        }
        return copy;
    }

    static IEnumerator ActBlocked(Player p, int ms)
    {
        var acting = p.Client.ActAsync("examine", new { instance_id = "dream_bottle_2" });
        var until = DateTime.UtcNow.AddMilliseconds(ms);
        while (!acting.IsCompleted && DateTime.UtcNow < until)
            Thread.Sleep(10);  // a loading hitch (or a .Result): the main thread never drains meanwhile
        var answered = acting.IsCompleted && !acting.IsFaulted;
        yield return Wait(acting);
        yield return new JObject { { "answered_while_blocked", answered }, { "faulted", acting.IsFaulted } };
    }

    /// <summary>Put the local chain one version behind the world (as a lost delta would): the next delta is a gap to repair.</summary>
    static IEnumerator Skew(Player p)
    {
        var world = p.Client.World;
        var behind = (JObject)world.View.DeepClone();
        behind["snapshot_version"] = world.Version - 1;
        world.ApplySnapshot(behind);
        yield return new JObject { { "version", world.Version } };
    }

    static IEnumerator Close(Player p)
    {
        var closing = p.Client.CloseAsync();
        yield return Wait(closing);
        yield return new JObject { { "faulted", closing.IsFaulted }, { "open", p.Client.IsOpen } };
    }

    static IEnumerator BadToken(Player p, string token)
    {
        var options = new GaiaClientOptions { GatewayUrl = p.Url, Token = token, Dispatcher = MainThread,
                                              InitialBackoff = TimeSpan.FromMilliseconds(200) };
        IGaiaClient intruder = new GaiaClient(options);
        var authRequired = 0;
        intruder.AuthRequired += code => authRequired = code;
        var connecting = intruder.ConnectAsync();
        yield return Wait(connecting);
        while (authRequired == 0)
            yield return null;
        var until = DateTime.UtcNow.AddSeconds(1.5);  // several backoffs: a client that retried would be open by now
        while (DateTime.UtcNow < until)
            yield return null;
        var error = connecting.Exception == null ? null : connecting.Exception.InnerException;
        yield return new JObject { { "refused", error == null ? null : error.GetType().Name }, { "auth_required", authRequired },
                                   { "retried", intruder.IsOpen } };
    }

    /// <summary>Checks of the package's own rules that need no server (items 1, 6 of issue 27).</summary>
    static IEnumerator Units(string downUrl)
    {
        var results = new JObject();
        var world = new LocalWorld();
        var areas = new List<string>();
        world.AreaChanged += a => areas.Add(a);
        var snapshot = JObject.Parse(@"{""type"": ""area_of_interest"", ""snapshot_version"": 5,
            ""areas"": {""a.b"": {""spots"": {""s"": {""items"": [{""instance_id"": ""x""}]}}}, ""hall"": {""spots"": {}}},
            ""player"": {""current_area"": ""hall"", ""inventory"": []}, ""npcs"": {""louisa"": {""area_id"": ""hall""}},
            ""environment"": {""weather"": ""rain""}, ""players"": [{""user_id"": ""me"", ""area_id"": ""hall""}]}");
        world.ApplySnapshot(snapshot);
        areas.Clear();
        var npcMove = JObject.Parse(@"{""base_version"": 5, ""snapshot_version"": 6, ""changes"": [
            {""operation"": ""update"", ""area_id"": ""a.b"", ""path"": ""npcs.louisa.area_id"", ""value"": ""a.b""}]}");
        results["npc_move"] = world.ApplyUpdate(npcMove, "me").ToString();
        results["npc_area"] = world.NpcArea("louisa");
        results["npc_areas_changed"] = new JArray(areas.OrderBy(a => a, StringComparer.Ordinal));
        results["odd_ids"] = world.ItemsAt("a.b", "s").Count + "," + world.ItemsAt("no such", "[0]").Count + "," +
                             world.ItemsAt(null, null).Count + "," + world.ItemsAt("a", "b.s").Count;
        try
        {
            ((IDictionary<string, string>)world.Roster)["intruder"] = "hall";
            results["roster_write"] = "allowed";
        }
        catch (Exception e)
        {
            results["roster_write"] = e.GetType().Name;
        }
        var unknown = JObject.Parse(@"{""base_version"": 6, ""snapshot_version"": 7, ""changes"": [{""operation"": ""teleport""}]}");
        results["unknown_change"] = world.ApplyUpdate(unknown, "me").ToString();
        var next = JObject.Parse(@"{""base_version"": 7, ""snapshot_version"": 8, ""changes"": []}");
        results["after_failure"] = world.ApplyUpdate(next, "me").ToString();
        world.ApplyPresence(new PresenceChange { Event = "join", UserId = "bob", AreaId = "hall" });
        results["view_players"] = new JArray(world.View["players"].Select(p => (string)p["user_id"]));
        TypedWorld(results);
        yield return BadOptions(results);

        var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        IGaiaClient idle = new GaiaClient(new GaiaClientOptions { GatewayUrl = downUrl, Token = "t", Dispatcher = MainThread });
        var act = idle.ActAsync("go", new { destination = "x" }, cancelled.Token);
        yield return Wait(act);
        results["act_unconnected"] = act.Exception == null ? "none" : act.Exception.InnerException.GetType().Name;
        var down = idle.ConnectAsync();
        yield return Wait(down);
        results["connect_down"] = down.Exception == null ? down.Status.ToString() : down.Exception.InnerException.GetType().Name + ": " + down.Exception.InnerException.Message;
        var cancel = idle.ConnectAsync(cancelled.Token);
        yield return Wait(cancel);
        results["connect_cancelled"] = cancel.IsCanceled || cancel.Exception != null &&
                                       cancel.Exception.InnerException is OperationCanceledException;
        yield return results;
    }

    /// <summary>The assembly's version as a game sees it at run time (reflection on Gaia.Realtime.dll).</summary>
    static IEnumerator Version()
    {
        var assembly = typeof(GaiaClient).Assembly;
        var informational = (System.Reflection.AssemblyInformationalVersionAttribute)Attribute.GetCustomAttribute(
            assembly, typeof(System.Reflection.AssemblyInformationalVersionAttribute));
        var file = (System.Reflection.AssemblyFileVersionAttribute)Attribute.GetCustomAttribute(
            assembly, typeof(System.Reflection.AssemblyFileVersionAttribute));
        yield return new JObject { { "name", assembly.GetName().Name }, { "version", assembly.GetName().Version.ToString() },
                                   { "informational", informational == null ? null : informational.InformationalVersion },
                                   { "file", file == null ? null : file.Version } };
    }

    /// <summary>A first ConnectAsync against a server that never finishes the handshake: how it failed, and when.</summary>
    static IEnumerator ConnectDeadline(string url, int connectMs)
    {
        var options = new GaiaClientOptions { GatewayUrl = url, Token = "t", Dispatcher = MainThread,
                                              ConnectTimeout = TimeSpan.FromMilliseconds(connectMs) };
        IGaiaClient client = new GaiaClient(options);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var connecting = client.ConnectAsync();
        while (!connecting.IsCompleted)
            yield return null;
        var took = clock.ElapsedMilliseconds;
        client.Dispose();
        var error = connecting.Exception == null ? null : connecting.Exception.InnerException;
        yield return new JObject { { "status", connecting.Status.ToString() }, { "elapsed_ms", took },
                                   { "type", error == null ? null : error.GetType().Name },
                                   { "inner", error == null || error.InnerException == null ? null : error.InnerException.GetType().Name },
                                   { "message", error == null ? null : error.Message }, { "open", client.IsOpen } };
    }

    /// <summary>Options a client cannot work with: what the constructor (or ConnectAsync) throws, by case.</summary>
    static IEnumerator BadOptions(JObject results)
    {
        var cases = new List<KeyValuePair<string, Action<GaiaClientOptions>>> {
            Case("null_token", o => o.Token = null), Case("empty_token", o => o.Token = ""), Case("blank_token", o => o.Token = "  "),
            Case("null_url", o => o.GatewayUrl = null), Case("empty_url", o => o.GatewayUrl = ""),
            Case("relative_url", o => o.GatewayUrl = "gateway.example"), Case("ftp_url", o => o.GatewayUrl = "ftp://gateway.example"),
            Case("empty_experience", o => o.Experience = ""), Case("null_dispatcher", o => o.Dispatcher = null),
            Case("zero_connect_timeout", o => o.ConnectTimeout = TimeSpan.Zero) };
        var thrown = new JObject();
        foreach (var bad in cases)
        {
            var options = new GaiaClientOptions { GatewayUrl = "https://gateway.example", Token = "t", Dispatcher = MainThread };
            bad.Value(options);
            try
            {
                new GaiaClient(options).Dispose();
                thrown[bad.Key] = "none";
            }
            catch (ArgumentException e)
            {
                thrown[bad.Key] = e.GetType().Name + " " + e.ParamName + " | " + e.Message.Split('\n')[0];
            }
        }
        try
        {
            new GaiaClient(null);
            thrown["null_options"] = "none";
        }
        catch (ArgumentException e)
        {
            thrown["null_options"] = e.GetType().Name + " " + e.ParamName;
        }
        var later = new GaiaClientOptions { GatewayUrl = "https://gateway.example", Token = "t", Dispatcher = MainThread };
        IGaiaClient client = new GaiaClient(later);
        later.Token = null;  // the options are fields: changed after the constructor checked them
        var connecting = client.ConnectAsync();
        while (!connecting.IsCompleted)
            yield return null;
        var error = connecting.Exception == null ? null : connecting.Exception.InnerException as ArgumentException;
        thrown["token_nulled_before_connect"] = error == null ? connecting.Status.ToString() : error.GetType().Name + " " + error.ParamName;
        results["bad_options"] = thrown;
    }

    static KeyValuePair<string, Action<GaiaClientOptions>> Case(string name, Action<GaiaClientOptions> spoil)
    {
        return new KeyValuePair<string, Action<GaiaClientOptions>>(name, spoil);
    }

    /// <summary>The typed world on a LocalWorld of the game's own, as a fake client's test would fill it.</summary>
    static void TypedWorld(JObject results)
    {
        var world = new LocalWorld();
        var seen = new List<string>();
        world.NpcMoved += m => seen.Add("npc " + m);
        world.EnvironmentChanged += e => seen.Add("env " + e);
        world.CurrentAreaChanged += m => seen.Add("here " + m);
        world.ApplySnapshot(JObject.Parse(@"{""type"": ""area_of_interest"", ""snapshot_version"": 1,
            ""areas"": {""entrance"": {""id"": ""entrance"", ""name"": ""Entrance"", ""description"": ""A bell."", ""exits"": [""main_room"", ""garden""],
                                   ""spots"": {""doormat"": {""id"": ""doormat"", ""name"": ""woven mat"", ""items"": [{""instance_id"": ""key_1"", ""template_id"": ""key""}]}}},
                       ""main_room"": {""id"": ""main_room"", ""name"": ""Main Room"", ""exits"": [""entrance""], ""spots"": {}}},
            ""player"": {""current_area"": ""entrance"", ""inventory"": []},
            ""npcs"": {""louisa"": {""id"": ""louisa"", ""name"": ""Louisa"", ""area_id"": ""main_room""}, ""bob"": {""id"": ""bob"", ""name"": ""Bob"", ""area_id"": ""entrance""}},
            ""environment"": {""weather"": ""clear"", ""time_of_day"": ""dawn""}, ""players"": []}"));
        results["typed_first_snapshot_events"] = seen.Count;
        var here = world.Here;
        results["typed_here"] = here.Id + "|" + here.Name + "|" + here.Description + "|" + string.Join(",", here.Exits) + "|" +
                                here.Spots[0].Name + ":" + here.Spots[0].Items[0].InstanceId;
        results["typed_exit_names"] = new JArray(here.Exits.Select(e => world.Area(e) == null ? "?" : world.Area(e).Name));
        results["typed_npcs"] = string.Join(",", world.Npcs.Select(n => n.Id + "@" + n.AreaId));
        results["typed_npcs_here"] = string.Join(",", world.NpcsIn("entrance").Select(n => n.Name));
        results["typed_unknown"] = (world.Area("nowhere") == null) + "," + (world.Npc("nobody") == null) + "," + (world.Area(null) == null);
        results["typed_environment"] = world.Weather + "|" + world.TimeOfDay + "|" +
                                       string.Join(",", world.EnvironmentValues.Select(p => p.Key + "=" + p.Value));
        world.ApplyUpdate(JObject.Parse(@"{""base_version"": 1, ""snapshot_version"": 2, ""changes"": [
            {""operation"": ""update"", ""area_id"": ""entrance"", ""path"": ""npcs.louisa.area_id"", ""value"": ""entrance""},
            {""operation"": ""update"", ""area_id"": null, ""path"": ""environment.weather"", ""value"": ""misty""},
            {""operation"": ""update"", ""area_id"": null, ""path"": ""environment.time_of_day"", ""value"": ""dawn""},
            {""operation"": ""update"", ""area_id"": null, ""path"": ""player.current_area"", ""value"": ""main_room""}]}"), "me");
        results["typed_delta_events"] = new JArray(seen);
        results["typed_after_delta"] = world.Npc("louisa").AreaId + "|" + world.Weather + "|" + world.Here.Name + "|" + world.Roster["me"];
        seen.Clear();
        var failed = world.ApplyUpdate(JObject.Parse(@"{""base_version"": 2, ""snapshot_version"": 3, ""changes"": [
            {""operation"": ""update"", ""area_id"": null, ""path"": ""environment.weather"", ""value"": ""starfall""},
            {""operation"": ""teleport""}]}"));  // half applied: the weather is in View, but no event said so
        results["typed_failed_events"] = failed + " " + seen.Count;
        world.ApplySnapshot(JObject.Parse(@"{""type"": ""area_of_interest"", ""snapshot_version"": 9,
            ""areas"": {""entrance"": {""name"": ""Entrance"", ""exits"": [], ""spots"": {}}},
            ""player"": {""current_area"": ""entrance"", ""inventory"": []},
            ""npcs"": {""louisa"": {""area_id"": ""main_room""}, ""zed"": {""name"": ""Zed"", ""area_id"": ""entrance""}},
            ""environment"": {""weather"": ""starfall"", ""time_of_day"": ""dawn""}, ""players"": []}"));
        results["typed_snapshot_events"] = new JArray(seen);
        world.NpcMoved += m => { throw new InvalidOperationException("a game bug in an NpcMoved handler"); };
        try
        {
            world.ApplyUpdate(JObject.Parse(@"{""base_version"": 9, ""snapshot_version"": 10, ""changes"": [
                {""operation"": ""update"", ""area_id"": ""entrance"", ""path"": ""npcs.zed.area_id"", ""value"": ""garden""}]}"));
            results["typed_own_world_handler"] = "swallowed";
        }
        catch (InvalidOperationException e)
        {
            results["typed_own_world_handler"] = e.Message + " (v" + world.Version + ")";
        }
    }

    static void Reply(int n, JObject data)
    {
        data["n"] = n;
        Console.Out.WriteLine(data.ToString(Formatting.None));
        Console.Out.Flush();
    }

    /// <summary>One player: its client (typed as the interface a game's own tests would fake) and what its handlers saw.</summary>
    sealed class Player
    {
        internal readonly IGaiaClient Client;
        internal readonly List<JObject[]> Pairs = new List<JObject[]>();
        internal readonly List<int> Closes = new List<int>();
        internal readonly List<string> HandlerFailures = new List<string>();
        internal readonly Dictionary<string, int> UpdatesBy = new Dictionary<string, int>();
        internal readonly Dictionary<string, int> Results = new Dictionary<string, int>();
        internal readonly HashSet<string> Weathers = new HashSet<string>();
        internal readonly Dictionary<string, int> AreaChanges = new Dictionary<string, int>();
        internal readonly List<string> Presence = new List<string>();
        internal readonly List<string> Resyncs = new List<string>();
        internal readonly List<JObject> NpcMoves = new List<JObject>();
        internal readonly List<string> EnvironmentChanges = new List<string>();
        internal readonly List<string> AreaMoves = new List<string>();
        internal int Resumes;
        internal bool ThrowOnNextUpdate;
        private JObject view;

        internal Player(IGaiaClient client)
        {
            Client = client;
            client.SnapshotApplied += w =>
            {
                if (view != null)
                    Pairs.Add(new[] { view, w.View });
                view = w.View;
            };
            client.WorldUpdated += u =>
            {
                Count(UpdatesBy, u.ActorId ?? "?");
                Count(Results, u.Result.ToString());
                var weather = Client.World.Environment("weather");
                if (weather != null)
                    Weathers.Add(weather);
                if (ThrowOnNextUpdate)
                {
                    ThrowOnNextUpdate = false;
                    throw new InvalidOperationException("a game bug in a WorldUpdated handler");
                }
            };
            client.Closed += c => Closes.Add(c.Code);
            client.Resumed += r => Resumes++;
            client.ResyncRequired += reason => Resyncs.Add(reason);
            client.HandlerFailed += e => HandlerFailures.Add(e.Message);
            client.PresenceChanged += p => Presence.Add(p.Event + " " + p.UserId);
            client.World.AreaChanged += a => Count(AreaChanges, a);
            client.World.NpcMoved += m => Keep(NpcMoves, new JObject { { "npc", m.NpcId }, { "from", m.From }, { "to", m.To },
                                                                       { "version", Client.World.Version } });
            client.World.EnvironmentChanged += e => Keep(EnvironmentChanges, e.Key + "=" + e.Value);
            client.World.CurrentAreaChanged += m => Keep(AreaMoves, m.ToString());
        }

        static void Keep<T>(List<T> list, T entry)
        {
            list.Add(entry);
            if (list.Count > 100)
                list.RemoveAt(0);
        }

        /// <summary>The typed world beside the same facts read from View: a test compares them.</summary>
        JObject Typed()
        {
            var w = Client.World;
            if (w.View == null)
                return null;
            var here = w.Here;
            return new JObject {
                { "npcs", JObject.FromObject(w.Npcs.ToDictionary(n => n.Id, n => n.AreaId)) },
                { "view_npcs", JObject.FromObject(((JObject)w.View["npcs"]).Properties().ToDictionary(p => p.Name, p => (string)p.Value["area_id"])) },
                { "environment", JObject.FromObject(w.EnvironmentValues) }, { "view_environment", w.View["environment"].DeepClone() },
                { "weather", w.Weather }, { "time_of_day", w.TimeOfDay },
                { "here", here == null ? null : here.Name }, { "view_here", (string)w.View["areas"][w.CurrentArea]["name"] },
                { "exits", here == null ? null : new JArray(here.Exits) }, { "view_exits", w.View["areas"][w.CurrentArea]["exits"].DeepClone() } };
        }

        internal string Url;
        internal Counted Seam;

        internal JObject Status()
        {
            var w = Client.World;
            return new JObject {
                { "open", Client.IsOpen }, { "connection_id", Client.ConnectionId }, { "last_seq", Client.LastSeq },
                { "version", w.Version }, { "gaps", w.Gaps }, { "failures", w.Failures }, { "snapshots", w.Snapshots },
                { "area", w.CurrentArea }, { "inventory", new JArray(w.Inventory.Select(i => i.InstanceId)) },
                { "roster", JObject.FromObject(w.Roster.ToDictionary(p => p.Key, p => p.Value)) },
                { "closes", new JArray(Closes) }, { "resumes", Resumes }, { "seam", new JObject { { "opened", Seam.Opened }, { "sent", Seam.Sent }, { "received", Seam.Received } } }, { "resyncs", new JArray(Resyncs) }, { "handler_failures", new JArray(HandlerFailures) },
                { "updates_by", JObject.FromObject(UpdatesBy) }, { "results", JObject.FromObject(Results) },
                { "weathers", new JArray(Weathers.OrderBy(x => x, StringComparer.Ordinal)) },
                { "area_changes", JObject.FromObject(AreaChanges) }, { "presence", new JArray(Presence) },
                { "npc_moves", new JArray(NpcMoves) }, { "environment_changes", new JArray(EnvironmentChanges) },
                { "area_moves", new JArray(AreaMoves) }, { "typed", Typed() } };
        }

        static void Count(Dictionary<string, int> counts, string key)
        {
            int n;
            counts.TryGetValue(key, out n);
            counts[key] = n + 1;
        }
    }

    /// <summary>What went through a transport plugged into the seam.</summary>
    sealed class Counted
    {
        internal int Opened, Sent, Received;
    }

    /// <summary>A transport of the game's own (as a WebGL bridge would be): here a counting wrapper around the default.</summary>
    sealed class CountingTransport : IWebSocketTransport
    {
        readonly IWebSocketTransport inner;
        readonly Counted counted;

        internal CountingTransport(IWebSocketTransport inner, Counted counted)
        {
            this.inner = inner;
            this.counted = counted;
        }

        public async Task ConnectAsync(Uri uri, IDictionary<string, string> headers, CancellationToken cancel)
        {
            await inner.ConnectAsync(uri, headers, cancel);
            Interlocked.Increment(ref counted.Opened);
        }

        public Task SendTextAsync(string text, CancellationToken cancel)
        {
            Interlocked.Increment(ref counted.Sent);
            return inner.SendTextAsync(text, cancel);
        }

        public async Task<string> ReceiveTextAsync(CancellationToken cancel)
        {
            var text = await inner.ReceiveTextAsync(cancel);
            if (text != null)
                Interlocked.Increment(ref counted.Received);
            return text;
        }

        public Task CloseAsync(int code, string reason, CancellationToken cancel) { return inner.CloseAsync(code, reason, cancel); }
        public void Abort() { inner.Abort(); }
        public bool IsOpen { get { return inner.IsOpen; } }
        public int? CloseCode { get { return inner.CloseCode; } }
        public string CloseReason { get { return inner.CloseReason; } }
        public void Dispose() { inner.Dispose(); }
    }
}
