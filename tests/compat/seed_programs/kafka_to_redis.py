# The first seed's program ("pyspark设置 checkpoint", a complete example): Kafka -> updateStateByKey
# -> Redis, recovered with StreamingContext.getOrCreate. The blog's code is kept as written; only
# the addresses changed (they come from the command line), and the parts the post leaves out
# (imports, updateFunc, backend) are filled in the way such programs write them.
#
#   streamkeep run --pyspark kafka_to_redis.py BROKERS TOPIC REDIS_HOST REDIS_PORT CHECKPOINT_DIR
#
# Each line of the topic is "user,operation[,...]". The state per user is the number of
# operations and the last one; backend() writes it with HSET, so rewriting a batch after a
# crash is harmless (the state itself is restored exactly from the checkpoint).
import sys

import redis
from pyspark import SparkContext
from pyspark.streaming import StreamingContext
from pyspark.streaming.kafka import KafkaUtils

brokers, topic, redis_host, redis_port, check_point_path = sys.argv[1:6]


def updateFunc(new_values, last_state):
    state = last_state or {"ops": 0, "last": ""}
    for fields in new_values:
        state = {"ops": state["ops"] + 1, "last": fields[0] if fields else ""}
    return state


def backend(rdd):
    def save_partition(records):
        r = redis.StrictRedis(host=redis_host, port=int(redis_port))
        pipe = r.pipeline()
        for user, state in records:
            pipe.hset("operation_log:" + user, mapping={"ops": state["ops"], "last": state["last"]})
        pipe.execute()
        r.close()

    rdd.foreachPartition(save_partition)


def createContext():
    sc = SparkContext(appName="operation log")
    sc.setLogLevel("INFO")
    ssc = StreamingContext(sparkContext=sc, batchDuration=1)
    kafkaStreams = KafkaUtils.createDirectStream(ssc, [topic], kafkaParams={"metadata.broker.list": brokers})
    lines = kafkaStreams.map(lambda x: x[1])
    running_counts = lines.map(lambda line: (line.split(",")[0], line.split(",")[1:])).updateStateByKey(updateFunc, initialRDD=ssc.sparkContext.parallelize([]))
    running_counts.foreachRDD(backend)
    return ssc


if __name__ == "__main__":
    ssc = StreamingContext.getOrCreate(checkpointPath=check_point_path, setupFunc=lambda: createContext())
    ssc.start()
    ssc.awaitTermination()
