# The second seed's program ("Spark Streaming checkpoint机制", section 4), written in PySpark.
# The post's version is Scala and uses ConstantInputDStream, which PySpark does not have; PySpark's
# equivalent of a constant input stream is queueStream with an empty queue and a default RDD,
# which is returned for every batch. Everything else follows the post; the checkpoint directory
# (its only address) comes from the command line.
#
#   streamkeep run --pyspark constant_stream.py CHECKPOINT_DIR
import sys

from pyspark import SparkConf, SparkContext
from pyspark.streaming import StreamingContext

appName = "Recreating StreamingContext from Checkpoint"
sc = SparkContext("local[*]", appName, conf=SparkConf())

checkpointDir = sys.argv[1] if len(sys.argv) > 1 else "_checkpoint"


def createSC():
    ssc = StreamingContext(sc, batchDuration=5)

    # NOTE: You have to create dstreams inside the method
    # See http://stackoverflow.com/q/35090180/1305344

    # Create constant input dstream with the RDD
    rdd = sc.parallelize(range(0, 10))
    cis = ssc.queueStream([], default=rdd)

    # Sample stream computation
    cis.pprint()

    ssc.checkpoint(checkpointDir)
    return ssc


ssc = StreamingContext.getOrCreate(checkpointDir, createSC)

# Start streaming processing
ssc.start()
ssc.awaitTermination()
