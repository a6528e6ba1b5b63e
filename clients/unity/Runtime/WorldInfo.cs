using System.Collections.Generic;
using System.Linq;
using Newtonsoft.Json.Linq;

namespace Gaia.Realtime
{
    /// <summary>
    /// One area as the local world shows it when read (<see cref="LocalWorld.Area"/>, <see cref="LocalWorld.Here"/>):
    /// a copy, so read the world again after <see cref="LocalWorld.AreaChanged"/>.
    /// </summary>
    public sealed class AreaInfo
    {
        private readonly JObject json;

        internal AreaInfo(string id, JObject json)
        {
            this.json = (JObject)json.DeepClone();
            Id = id;
            Name = LocalWorld.Text(json["name"]) ?? id;
            Description = LocalWorld.Text(json["description"]) ?? "";
            var exits = json["exits"] as JArray;
            Exits = exits == null ? new string[0] : exits.Select(e => LocalWorld.Text(e)).Where(e => e != null).ToArray();
            var spots = json["spots"] as JObject;
            Spots = spots == null ? new SpotInfo[0]
                : spots.Properties().Where(p => p.Value is JObject).Select(p => new SpotInfo(p.Name, (JObject)p.Value)).ToArray();
        }

        /// <summary>The area's id (`main_room`): what `go` takes as its destination.</summary>
        public string Id { get; private set; }
        /// <summary>The name to show (`Main Room`; the id if the world gives none).</summary>
        public string Name { get; private set; }
        /// <summary>The area's description ("" if none).</summary>
        public string Description { get; private set; }
        /// <summary>The ids of the areas a `go` from here reaches, in the world's order.</summary>
        public IReadOnlyList<string> Exits { get; private set; }
        /// <summary>The area's spots, in the world's order, each with the items lying there.</summary>
        public IReadOnlyList<SpotInfo> Spots { get; private set; }

        /// <summary>A copy of the area's JSON, every field included.</summary>
        public JObject ToJson()
        {
            return (JObject)json.DeepClone();
        }

        /// <summary>The name.</summary>
        public override string ToString()
        {
            return Name;
        }
    }

    /// <summary>One spot of an area (`shelf_1`, "left shelf") and the items lying there when read.</summary>
    public sealed class SpotInfo
    {
        internal SpotInfo(string id, JObject json)
        {
            Id = id;
            Name = LocalWorld.Text(json["name"]) ?? id;
            Description = LocalWorld.Text(json["description"]) ?? "";
            var items = json["items"] as JArray;
            Items = items == null ? new Item[0] : items.OfType<JObject>().Select(i => new Item((JObject)i.DeepClone())).ToArray();
        }

        /// <summary>The spot's id.</summary>
        public string Id { get; private set; }
        /// <summary>The name to show (the id if the world gives none).</summary>
        public string Name { get; private set; }
        /// <summary>The spot's description ("" if none).</summary>
        public string Description { get; private set; }
        /// <summary>The items lying here (empty where the player cannot see them).</summary>
        public IReadOnlyList<Item> Items { get; private set; }

        /// <summary>The name.</summary>
        public override string ToString()
        {
            return Name;
        }
    }

    /// <summary>One NPC as the local world shows it when read (<see cref="LocalWorld.Npcs"/>, <see cref="LocalWorld.Npc"/>).</summary>
    public sealed class NpcInfo
    {
        internal NpcInfo(string id, JObject json)
        {
            Id = id;
            Name = LocalWorld.Text(json["name"]) ?? id;
            Description = LocalWorld.Text(json["description"]) ?? "";
            AreaId = LocalWorld.Text(json["area_id"]);
        }

        /// <summary>The NPC's id (`louisa`): what `talk` takes.</summary>
        public string Id { get; private set; }
        /// <summary>The name to show (the id if the world gives none).</summary>
        public string Name { get; private set; }
        /// <summary>The NPC's description ("" if none).</summary>
        public string Description { get; private set; }
        /// <summary>The area the NPC stands in (null if unknown).</summary>
        public string AreaId { get; private set; }

        /// <summary>The name.</summary>
        public override string ToString()
        {
            return Name;
        }
    }

    /// <summary>An NPC walked (<see cref="LocalWorld.NpcMoved"/>).</summary>
    public sealed class NpcMove
    {
        /// <summary>Who walked.</summary>
        public string NpcId;
        /// <summary>The area left (null: the NPC was not in the world before).</summary>
        public string From;
        /// <summary>The area entered (null: the NPC is no longer in the world).</summary>
        public string To;

        /// <summary>`louisa: counter -> main_room`.</summary>
        public override string ToString()
        {
            return NpcId + ": " + From + " -> " + To;
        }
    }

    /// <summary>The player's own area changed (<see cref="LocalWorld.CurrentAreaChanged"/>).</summary>
    public sealed class AreaMove
    {
        /// <summary>The area left (null before the first snapshot).</summary>
        public string From;
        /// <summary>The area the player stands in now.</summary>
        public string To;

        /// <summary>`entrance -> main_room`.</summary>
        public override string ToString()
        {
            return From + " -> " + To;
        }
    }

    /// <summary>One value of the environment changed (<see cref="LocalWorld.EnvironmentChanged"/>).</summary>
    public sealed class EnvironmentChange
    {
        /// <summary>Which value: `weather`, `time_of_day` (or another the world keeps).</summary>
        public string Key;
        /// <summary>The new value (null: no longer set).</summary>
        public string Value;
        /// <summary>The value before (null: not set before).</summary>
        public string Previous;

        /// <summary>`weather: clear -> misty`.</summary>
        public override string ToString()
        {
            return Key + ": " + Previous + " -> " + Value;
        }
    }
}
